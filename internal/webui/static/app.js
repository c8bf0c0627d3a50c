// Chat client. Content is only ever set with textContent, never as markup.
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  const el = {
    status: $("status"), signin: $("signin"), userid: $("userid"), token: $("token"),
    dev: $("dev-signin"), signinError: $("signin-error"), chat: $("chat"),
    messages: $("messages"), send: $("send"), text: $("text"), sendBtn: $("send-btn"), signout: $("signout"),
  };
  const BACKOFF_MIN = 500, BACKOFF_MAX = 30000;
  let user = "", token = "", ws = null, attempt = 0, timer = null, seq = 0;
  const answers = new Map(); // reply_to -> answer <li> (pending or final)
  const seen = new Set(); // answer ids already shown

  const cursorKey = () => "chat.cursor." + user;
  const lastCursor = () => { try { return sessionStorage.getItem(cursorKey()) || ""; } catch (e) { return ""; } };
  const saveCursor = (c) => { try { if (c) sessionStorage.setItem(cursorKey(), c); } catch (e) { /* storage off */ } };

  function setStatus(state, text) {
    el.status.dataset.state = state;
    el.status.textContent = text;
    el.sendBtn.disabled = state !== "connected";
  }

  function add(cls, text) {
    const li = document.createElement("li");
    li.className = cls;
    li.textContent = text;
    el.messages.appendChild(li);
    li.scrollIntoView({ block: "end" });
    return li;
  }

  function answerFor(replyTo) {
    let li = answers.get(replyTo);
    if (!li) {
      li = add("answer pending", "");
      li.dataset.replyTo = replyTo;
      answers.set(replyTo, li);
    }
    return li;
  }

  function onFrame(f) {
    switch (f.type) {
      case "ready":
        // Where this connection starts in the history: resume from here
        // until an answer brings a newer cursor, so an answer written into
        // a socket that dies is not skipped on reconnect.
        saveCursor(f.cursor);
        break;
      case "ack": {
        const mine = el.messages.querySelector('li.mine[data-client-id="' + CSS.escape(f.client_id || "") + '"]');
        if (mine) { mine.dataset.id = f.id; mine.classList.remove("sending"); }
        break;
      }
      case "chunk": {
        if (!f.reply_to || typeof f.delta !== "string") break;
        const li = answerFor(f.reply_to);
        if (li.classList.contains("pending")) li.textContent += f.delta;
        break;
      }
      case "status": {
        // The answer is late (the model is busy or failing); it is still
        // coming. Shown on its pending answer until the answer arrives.
        if (!f.reply_to || typeof f.message !== "string") break;
        const li = answerFor(f.reply_to);
        if (!li.classList.contains("pending")) break;
        li.classList.add("delayed");
        li.dataset.note = f.message;
        break;
      }
      case "response": {
        if (f.id && seen.has(f.id)) break;
        if (f.id) seen.add(f.id);
        const li = f.reply_to ? answerFor(f.reply_to) : add("answer", "");
        li.textContent = f.content || "";
        li.classList.remove("pending", "delayed");
        delete li.dataset.note;
        if (f.id) li.dataset.id = f.id;
        saveCursor(f.cursor);
        break;
      }
      case "error": {
        if (f.id && seen.has(f.id)) break;
        if (f.id) seen.add(f.id);
        const li = f.reply_to && answers.get(f.reply_to);
        if (li && li.classList.contains("pending") && !li.textContent) li.remove();
        else if (li) { li.classList.remove("delayed"); delete li.dataset.note; }
        add("error", "Error: " + (f.message || "unknown error"));
        saveCursor(f.cursor);
        break;
      }
      default:
        break; // unknown frame types are ignored
    }
  }

  function connect() {
    clearTimeout(timer);
    if (!user) return;
    const proto = location.protocol === "https:" ? "wss:" : "ws:";
    const q = new URLSearchParams({ userid: user, token: token });
    const c = lastCursor();
    if (c) q.set("resume", c);
    setStatus("connecting", attempt ? "Reconnecting…" : "Connecting…");
    const s = new WebSocket(proto + "//" + location.host + "/ws?" + q.toString());
    ws = s;
    s.onopen = () => { if (ws === s) { attempt = 0; setStatus("connected", "Connected as " + user); } };
    s.onmessage = (ev) => {
      let f;
      try { f = JSON.parse(ev.data); } catch (e) { return; }
      if (f && typeof f === "object") onFrame(f);
    };
    s.onclose = (ev) => {
      if (ws !== s) return;
      ws = null;
      el.messages.querySelectorAll("li.mine.sending").forEach((li) => {
        li.classList.remove("sending");
        li.classList.add("unconfirmed");
        li.title = "Not confirmed by the server; send it again";
      });
      if (!user) return;
      if (ev.code === 4001) {
        // The token expired or its key was removed: a new one is needed.
        tokenExpired();
        return;
      }
      // Exponential backoff with full jitter, capped.
      const cap = Math.min(BACKOFF_MAX, BACKOFF_MIN * Math.pow(2, attempt));
      const delay = Math.round(cap / 2 + Math.random() * cap / 2);
      attempt++;
      const why = ev.code === 1008 ? " (too slow)" : ev.code === 1013 ? " (server busy)" : "";
      setStatus("reconnecting", "Disconnected" + why + "; reconnecting in " + Math.ceil(delay / 1000) + " s");
      timer = setTimeout(connect, delay);
    };
  }

  // A dev stack mints a new token at once; otherwise the user signs in again.
  async function tokenExpired() {
    if (!el.dev.hidden) {
      try {
        token = await devToken(user);
        setStatus("reconnecting", "Session renewed; reconnecting…");
        connect();
        return;
      } catch (err) { /* fall through to sign-in */ }
    }
    const u = user;
    user = ""; token = "";
    el.chat.hidden = true; el.signin.hidden = false;
    el.userid.value = u;
    el.signinError.textContent = "Your session expired; sign in again.";
    setStatus("signed-out", "Session expired");
  }

  async function devToken(u) {
    const r = await fetch("/dev/token?userid=" + encodeURIComponent(u), { cache: "no-store" });
    const body = await r.json();
    if (!r.ok || !body.token) throw new Error(body.error || "HTTP " + r.status);
    return body.token;
  }

  function signIn(u, t) {
    user = u; token = t; attempt = 0;
    el.signinError.textContent = "";
    el.signin.hidden = true;
    el.chat.hidden = false;
    connect();
    el.text.focus();
  }

  el.signin.addEventListener("submit", (e) => {
    e.preventDefault();
    const u = el.userid.value.trim(), t = el.token.value.trim();
    if (!u || !t) { el.signinError.textContent = "User id and token are required."; return; }
    signIn(u, t);
  });

  el.dev.addEventListener("click", async () => {
    const u = el.userid.value.trim();
    if (!u) { el.signinError.textContent = "Enter a user id first."; return; }
    try {
      signIn(u, await devToken(u));
    } catch (err) {
      el.signinError.textContent = "Dev sign-in failed: " + err.message;
    }
  });

  el.send.addEventListener("submit", (e) => {
    e.preventDefault();
    const text = el.text.value;
    if (!text.trim() || !ws || ws.readyState !== WebSocket.OPEN) return;
    const id = "c-" + Date.now().toString(36) + "-" + (++seq);
    ws.send(JSON.stringify({ type: "message", content: text, userid: user, id: id, stream: true }));
    const li = add("mine sending", text);
    li.dataset.clientId = id;
    el.text.value = "";
  });

  el.text.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) { e.preventDefault(); el.send.requestSubmit(); }
  });

  el.signout.addEventListener("click", () => {
    user = ""; token = ""; clearTimeout(timer);
    if (ws) { const s = ws; ws = null; s.close(1000); }
    el.messages.replaceChildren(); answers.clear(); seen.clear();
    el.chat.hidden = true; el.signin.hidden = false;
    setStatus("signed-out", "Signed out");
  });

  // Dev sign-in is offered when /dev/token exists (it answers 400 without a userid).
  fetch("/dev/token", { cache: "no-store" }).then((r) => { el.dev.hidden = r.status === 404 || r.status === 405; }).catch(() => {});
})();
