package webui

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"

	"github.com/chatrelay/chat/internal/llm"
	"github.com/chatrelay/chat/internal/testinfra"
)

const testSecret = "webui-test-secret-0123456789abcdef"

// site is the chat as a browser reaches it in the shipped deployment: a
// dev stack (its gateway serves the page, /dev/token and /ws) behind the
// real nginx/nginx.conf, which the browser reaches on a published port
// other than the one nginx listens on, as compose's "8080:80" does. The
// stack runs with its default limits, as deployed. Cutting the published
// port drops every socket and refuses new connections, as a lost network
// does.
type site struct {
	pub     *testinfra.Proxy
	backend string // ws://host:port of the dev stack, bypassing nginx
}

func startSite(t *testing.T) *site {
	t.Helper()
	httpAddr, opsAddr := testinfra.FreeAddr(t), testinfra.FreeAddr(t)
	testinfra.StartProcess(t, "devstack", "devstack", []string{
		"HTTP_ADDR=" + httpAddr, "OPS_ADDR=" + opsAddr, "AUTH_SECRET=" + testSecret,
	}, "http://"+opsAddr+"/readyz")
	nginx := testinfra.StartNginx(t, []string{httpAddr})
	return &site{pub: nginx.Publish(t), backend: "ws://" + httpAddr}
}

// URL is the page's address as the browser knows it.
func (s *site) URL() string { return "http://" + s.pub.Addr() }

// cut closes every socket and refuses new ones until restore.
func (s *site) cut() { s.pub.Refuse() }

func (s *site) restore() { s.pub.Accept() }

func startBrowser(t *testing.T) context.Context {
	t.Helper()
	bin := testinfra.RequireBinary(t, "chromium")
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(bin),
		chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun, chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(390, 844), // a phone
	}
	root, cancelRoot := context.WithTimeout(context.Background(), 90*time.Second)
	alloc, cancelAlloc := chromedp.NewExecAllocator(root, opts...)
	tab, cancelTab := chromedp.NewContext(alloc)
	t.Cleanup(func() { cancelTab(); cancelAlloc(); cancelRoot() })
	// The first run starts the browser, which lives as long as that
	// context: no timeout of its own (root bounds it).
	if err := chromedp.Do(tab); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	return tab
}

// run runs actions with a bound.
func run(t *testing.T, tab context.Context, d time.Duration, what string, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	ctx, cancel := context.WithTimeout(tab, d)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// waitJS polls a boolean expression until it holds.
func waitJS(t *testing.T, tab context.Context, d time.Duration, what, expr string) {
	t.Helper()
	deadline := time.Now().Add(d)
	var lastErr error
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(tab, 2*time.Second)
		ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool](expr))
		cancel()
		lastErr = err
		if lastErr == nil && ok {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("waiting for %s: not within %s (last error: %v)", what, d, lastErr)
}

func texts(t *testing.T, tab context.Context, sel string) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(tab, 5*time.Second)
	defer cancel()
	out, err := chromedp.Run(ctx, chromedp.Evaluate[[]string](
		fmt.Sprintf(`[...document.querySelectorAll(%q)].map(e => e.textContent)`, sel)))
	if err != nil {
		t.Fatalf("read %s: %v", sel, err)
	}
	return out
}

func jsString(s string) string { return fmt.Sprintf("%q", s) } // Go quoting is valid JS for these strings

// screenshotOnFailure keeps what the page looked like when a subtest failed.
func screenshotOnFailure(t *testing.T, tab context.Context) {
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		dir := os.Getenv("TEST_ARTIFACTS")
		if dir == "" {
			dir = filepath.Join("testdata", "artifacts")
		}
		ctx, cancel := context.WithTimeout(tab, 5*time.Second)
		defer cancel()
		png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
		if err != nil {
			t.Logf("screenshot: %v", err)
			return
		}
		status, _ := chromedp.Run(ctx, chromedp.TextContent(chromedp.CSS("#status")))
		name := strings.NewReplacer("/", "_", " ", "_").Replace(t.Name()) + ".png"
		if err := os.MkdirAll(dir, 0o755); err == nil {
			if err := os.WriteFile(filepath.Join(dir, name), png, 0o644); err == nil {
				t.Logf("page status %q; screenshot saved to %s", status, filepath.Join(dir, name))
			}
		}
	})
}

// signIn opens the page and uses dev sign-in as user.
func signIn(t *testing.T, tab context.Context, s *site, user string) {
	t.Helper()
	run(t, tab, 10*time.Second, "open page",
		chromedp.Navigate(s.URL()),
		chromedp.WaitVisible(chromedp.CSS("#dev-signin")),
		chromedp.SendKeys(chromedp.CSS("#userid"), user),
		chromedp.Click(chromedp.CSS("#dev-signin")),
	)
	waitJS(t, tab, 10*time.Second, "connected", `document.getElementById("status").dataset.state === "connected"`)
}

func sendFromPage(t *testing.T, tab context.Context, text string) {
	t.Helper()
	run(t, tab, 5*time.Second, "send "+text,
		chromedp.SendKeys(chromedp.CSS("#text"), text),
		chromedp.Click(chromedp.CSS("#send-btn")),
	)
}

func answerShown(text string) string {
	return `[...document.querySelectorAll("#messages li.answer:not(.pending)")].some(li => li.textContent.includes(` + jsString("You said: "+text) + `))`
}

func TestBrowser(t *testing.T) {
	// The site first: building and starting it may take longer than the
	// browser's own time bound.
	s := startSite(t)
	tab := startBrowser(t)
	var dialog atomic.Bool
	if err := chromedp.Listen(tab, func(ev any) {
		if _, ok := ev.(*page.EventJavascriptDialogOpening); ok {
			dialog.Store(true)
		}
	}); err != nil {
		t.Fatal(err)
	}

	t.Run("send and answer", func(t *testing.T) {
		screenshotOnFailure(t, tab)
		signIn(t, tab, s, "web-alice")
		sendFromPage(t, tab, "hello from the browser")
		waitJS(t, tab, 15*time.Second, "the answer", answerShown("hello from the browser"))
		got := texts(t, tab, "#messages li.answer")
		if len(got) != 1 || !strings.HasPrefix(got[0], llm.OfflineNotice) {
			t.Fatalf("answers shown: %q", got)
		}
		if mine := texts(t, tab, "#messages li.mine"); len(mine) != 1 || mine[0] != "hello from the browser" {
			t.Fatalf("own messages shown: %q", mine)
		}
	})

	t.Run("reconnect resumes", func(t *testing.T) {
		screenshotOnFailure(t, tab)
		const user = "web-bob"
		signIn(t, tab, s, user)
		sendFromPage(t, tab, "before the cut")
		waitJS(t, tab, 15*time.Second, "first answer", answerShown("before the cut"))
		waitJS(t, tab, 2*time.Second, "a stored cursor", `!!sessionStorage.getItem("chat.cursor.`+user+`")`)

		s.cut()
		waitJS(t, tab, 10*time.Second, "the page to notice", `document.getElementById("status").dataset.state !== "connected"`)
		// While the page is away, the same user chats from another client.
		other := testinfra.DialChat(t, s.backend, testSecret, user)
		if err := other.Send("while you were away", "go-1"); err != nil {
			t.Fatal(err)
		}
		other.Expect(t, "ack", 10*time.Second)
		other.Expect(t, "response", 15*time.Second)
		_ = other.Conn.Close()
		s.restore()

		waitJS(t, tab, 25*time.Second, "reconnect", `document.getElementById("status").dataset.state === "connected"`)
		waitJS(t, tab, 15*time.Second, "the answer produced while away", answerShown("while you were away"))
		n := 0
		for _, a := range texts(t, tab, "#messages li.answer") {
			if strings.Contains(a, "You said: before the cut") {
				n++
			}
		}
		if n != 1 {
			t.Fatalf("the answer from before the cut is shown %d times", n)
		}
	})

	t.Run("markup is text", func(t *testing.T) {
		screenshotOnFailure(t, tab)
		const markup = `<img src=x onerror=alert(1)><b>bold</b>`
		signIn(t, tab, s, "web-carol")
		sendFromPage(t, tab, markup)
		waitJS(t, tab, 15*time.Second, "the answer", answerShown(markup))
		ctx, cancel := context.WithTimeout(tab, 5*time.Second)
		elems, err := chromedp.Run(ctx, chromedp.Evaluate[int](`document.querySelectorAll("#messages li *").length + document.querySelectorAll("img, b").length`))
		cancel()
		if err != nil || elems != 0 {
			t.Fatalf("content created %d elements (%v)", elems, err)
		}
		if mine := texts(t, tab, "#messages li.mine"); len(mine) != 1 || mine[0] != markup {
			t.Fatalf("own message shown as %q", mine)
		}
		if dialog.Load() {
			t.Fatal("a script in the content ran (dialog opened)")
		}
	})
}
