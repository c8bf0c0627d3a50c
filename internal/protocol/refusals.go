package protocol

import (
	"fmt"
	"strings"
)

// Refusal is one way the server turns a client away, ends its socket or
// refuses one of its frames. The table below is the only place these
// codes, labels and sentences are written: the gateway answers with them,
// its metrics are zero-initialised and described from them, and the docs
// tables are checked against them (refusals_test.go).
type Refusal struct {
	// Kind says which counter counts it and how the client hears of it.
	Kind Kind
	// Reason is the metric label and the log field: bounded, snake_case.
	Reason string
	// Status is the HTTP status of a refused handshake (0: none of ours,
	// or refused after the upgrade).
	Status int
	// Code is the WebSocket close code (0: the socket is not closed).
	Code int
	// Message is what the client is told (the close reason, the error
	// frame's message, or the HTTP body's "error"); empty for frame
	// refusals whose message names the problem found.
	Message string
	// When says when it happens, for the docs.
	When string
}

// Kind groups refusals by the counter they are counted in.
type Kind int

const (
	// Connect: a connection attempt's outcome, chat_ws_connects_total{outcome}.
	Connect Kind = iota + 1
	// Disconnect: why an open socket closed, chat_ws_disconnects_total{reason}.
	Disconnect
	// Frame: a client frame refused with an error frame (the socket stays
	// open), chat_gateway_messages_rejected_total{reason}.
	Frame
)

// Close codes of RFC 6455 the server sends, and the application's own
// (4000-4999).
const (
	CloseNormal        = 1000
	CloseGoingAway     = 1001
	CloseProtocolError = 1002
	CloseAbnormal      = 1006 // not sent: the connection failed
	ClosePolicy        = 1008
	CloseTooBig        = 1009
	CloseTryAgainLater = 1013
	// CloseTokenInvalid: the socket's token expired or its key was
	// removed; get a new token, then reconnect (with the cursor).
	CloseTokenInvalid = 4001
)

// The connection outcomes.
var (
	Accepted      = Refusal{Kind: Connect, Reason: "accepted", Status: 101, When: "the socket is open"}
	Unauthorized  = Refusal{Kind: Connect, Reason: "unauthorized", Status: 401, Message: "unauthorized", When: "missing, invalid or expired token, or a userid that is not the token's"}
	BadOrigin     = Refusal{Kind: Connect, Reason: "bad_origin", Status: 403, Message: "origin not allowed", When: "a browser page from an origin that is neither the server's own nor in WS_ALLOWED_ORIGINS"}
	BadResume     = Refusal{Kind: Connect, Reason: "bad_request", Status: 400, Message: "resume must be the cursor of an answer", When: "a resume parameter that is not a cursor"}
	IPRateLimited = Refusal{Kind: Connect, Reason: "rate_limited", Status: 429, Message: "too many connection attempts", When: "over LIMIT_IP_CONNECTS_PER_MIN from one address (Retry-After says when to retry)"}
	UserSockets   = Refusal{Kind: Connect, Reason: "rate_limited", Status: 429, Message: "too many connections for this user", When: "the user already holds LIMIT_USER_SOCKETS sockets"}
	Unavailable   = Refusal{Kind: Connect, Reason: "unavailable", Status: 503, Message: "temporarily unavailable", When: "Redis cannot be reached (limits, subscription)"}
	Draining      = Refusal{Kind: Connect, Reason: "draining", Status: 503, Message: "server shutting down", When: "the instance is shutting down (a socket upgraded meanwhile is closed with 1001)"}
	UpgradeFailed = Refusal{Kind: Connect, Reason: "upgrade_failed", When: "not a valid WebSocket handshake (the upgrader answers 400)"}
	Full          = Refusal{Kind: Connect, Reason: "full", Code: CloseTryAgainLater, Message: "server full, try again", When: "the instance holds LIMIT_INSTANCE_SOCKETS sockets (closed right after the upgrade)"}
)

// Why an open socket closes.
var (
	ClientClosed  = Refusal{Kind: Disconnect, Reason: "client_closed", Code: CloseNormal, When: "the client closed the socket"}
	ReadError     = Refusal{Kind: Disconnect, Reason: "read_error", Code: CloseAbnormal, When: "the connection failed while reading"}
	WriteError    = Refusal{Kind: Disconnect, Reason: "write_error", Code: CloseAbnormal, When: "the connection failed while writing"}
	TooBig        = Refusal{Kind: Disconnect, Reason: "too_big", Code: CloseTooBig, Message: "frame too large", When: "a frame larger than WS_READ_LIMIT"}
	ProtocolError = Refusal{Kind: Disconnect, Reason: "protocol_error", Code: CloseProtocolError, Message: "protocol error", When: "a control frame RFC 6455 does not allow"}
	PongTimeout   = Refusal{Kind: Disconnect, Reason: "pong_timeout", Code: CloseGoingAway, Message: "ping timeout", When: "nothing from the client (pongs included) for WS_PONG_TIMEOUT"}
	SlowConsumer  = Refusal{Kind: Disconnect, Reason: "slow_consumer", Code: ClosePolicy, Message: "client too slow", When: "WS_SEND_QUEUE live frames wait for a client that does not read"}
	SocketLimit   = Refusal{Kind: Disconnect, Reason: "limited", Code: ClosePolicy, Message: "too many connections for this user", When: "the socket's slot expired (Redis unreachable for LIMIT_USER_SOCKETS_TTL) and the user's other sockets took it"}
	Shutdown      = Refusal{Kind: Disconnect, Reason: "shutdown", Code: CloseGoingAway, Message: "server shutting down, reconnect", When: "the instance shuts down (after acking what it accepted); reconnect with the cursor"}
	ReplayFailed  = Refusal{Kind: Disconnect, Reason: "replay_failed", Code: CloseTryAgainLater, Message: "history unavailable; reconnect and resume", When: "answers that may be missing could not be read from the history for a while; reconnect with the cursor"}
	TokenExpired  = Refusal{Kind: Disconnect, Reason: "token_expired", Code: CloseTokenInvalid, Message: "token expired; get a new token and reconnect", When: "the token the socket was opened with expired (exp plus AUTH_LEEWAY)"}
	TokenRevoked  = Refusal{Kind: Disconnect, Reason: "token_revoked", Code: CloseTokenInvalid, Message: "token no longer valid; get a new token and reconnect", When: "the key that signed the socket's token was removed from the key file"}
)

// Frames refused with an error frame; the socket stays open.
var (
	FrameInvalid     = Refusal{Kind: Frame, Reason: "invalid", When: "a frame that does not decode (the reasons below name the problem)"}
	FrameBinary      = Refusal{Kind: Frame, Reason: "binary_frame", Message: "binary frames are not supported; send JSON text frames", When: "a binary frame"}
	FrameDraining    = Refusal{Kind: Frame, Reason: "draining", Message: "server is shutting down; reconnect and send the message again", When: "a message or resume while the instance shuts down"}
	FrameRateLimited = Refusal{Kind: Frame, Reason: "rate_limited", Message: "too many messages; send again in %ss", When: "over RATE_USER_MESSAGES_PER_MIN for the user, across instances"}
	FrameTokenBudget = Refusal{Kind: Frame, Reason: "token_budget", Message: "daily limit reached; it resets at 00:00 UTC", When: "the user's LIMIT_USER_TOKENS_PER_DAY is spent"}
	FrameResumeLimit = Refusal{Kind: Frame, Reason: "resume_limited", Message: "too many resume requests; try again in %ss", When: "more resume frames than WS_RESUMES_PER_MIN on one socket"}
	FrameNotQueued   = Refusal{Kind: Frame, Reason: "not_queued", Message: "message could not be queued; please send it again", When: "the broker did not take the message within GATEWAY_PRODUCE_TIMEOUT"}
)

// frameReasons are the decode problems DecodeClientFrame reports, each a
// Frame refusal whose message says what is wrong.
var frameReasons = []struct {
	r    Reason
	when string
}{
	{ReasonBadJSON, "not one flat JSON object of known fields"},
	{ReasonUnknownType, "a type other than message and resume"},
	{ReasonEmptyContent, "empty content"},
	{ReasonContentTooLong, "content longer than WS_MAX_CONTENT_BYTES"},
	{ReasonUserMismatch, "a userid that is not the connection's"},
	{ReasonInvalidText, "invalid UTF-8 or control characters"},
	{ReasonBadID, "an id or correlation_id that is not 1-64 of [A-Za-z0-9._:-]"},
	{ReasonBadCursor, "a resume cursor that is not a cursor"},
}

// Refusals is the whole table, in a fixed order.
func Refusals() []Refusal {
	out := []Refusal{
		Accepted, Unauthorized, BadOrigin, BadResume, IPRateLimited, UserSockets, Unavailable, Draining, UpgradeFailed, Full,
		ClientClosed, ReadError, WriteError, TooBig, ProtocolError, PongTimeout, SlowConsumer, SocketLimit, Shutdown,
		ReplayFailed, TokenExpired, TokenRevoked,
		FrameInvalid, FrameBinary, FrameDraining, FrameRateLimited, FrameTokenBudget, FrameResumeLimit, FrameNotQueued,
	}
	for _, fr := range frameReasons {
		out = append(out, Refusal{Kind: Frame, Reason: string(fr.r), When: fr.when})
	}
	return out
}

// Labels are the distinct Reasons of one kind, in table order: the label
// values a counter starts at zero with.
func Labels(k Kind) []string {
	var out []string
	for _, r := range Refusals() {
		if r.Kind == k && !containsString(out, r.Reason) {
			out = append(out, r.Reason)
		}
	}
	return out
}

// Help describes a counter's label values for its Help text.
func Help(k Kind, what string) string {
	return what + " (" + strings.Join(Labels(k), ", ") + ")."
}

// Text is the client message, with args filling its %s (a retry delay).
func (r Refusal) Text(args ...any) string {
	if len(args) == 0 {
		return r.Message
	}
	return fmt.Sprintf(r.Message, args...)
}

func containsString(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// Markdown renders the table for the README, between the markers
// "<!-- refusals:begin -->" and "<!-- refusals:end -->" (a test keeps the
// README equal to it).
func Markdown() string {
	var b strings.Builder
	b.WriteString("| counted in | reason (label) | HTTP | close | the client is told | when |\n|---|---|---|---|---|---|\n")
	for _, r := range Refusals() {
		status, code := "", ""
		if r.Status != 0 {
			status = fmt.Sprint(r.Status)
		}
		if r.Code != 0 {
			code = fmt.Sprint(r.Code)
		}
		msg := r.Message
		if msg != "" {
			msg = "`" + strings.ReplaceAll(msg, "%s", "N") + "`"
		}
		fmt.Fprintf(&b, "| %s | `%s` | %s | %s | %s | %s |\n", r.Kind, r.Reason, status, code, msg, r.When)
	}
	return b.String()
}

// String names the counter a kind is counted in.
func (k Kind) String() string {
	switch k {
	case Connect:
		return "`chat_ws_connects_total{outcome}`"
	case Disconnect:
		return "`chat_ws_disconnects_total{reason}`"
	case Frame:
		return "`chat_gateway_messages_rejected_total{reason}`"
	}
	return "?"
}
