package contract

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/santhosh-tekuri/jsonschema/v6"
	"go.yaml.in/yaml/v3"

	"github.com/chatrelay/chat/internal/envelope"
	"github.com/chatrelay/chat/internal/kafka"
	"github.com/chatrelay/chat/internal/testinfra"
)

const docURL = "file:///asyncapi.json"

type spec struct {
	doc     map[string]any
	schemas map[string]*jsonschema.Schema
}

func loadSpec(t *testing.T) *spec {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(testinfra.RepoRoot(t), "docs", "asyncapi.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var y map[string]any
	if err := yaml.Unmarshal(raw, &y); err != nil {
		t.Fatalf("asyncapi.yaml: %v", err)
	}
	if y["asyncapi"] != "3.0.0" {
		t.Fatalf("asyncapi version %v, want 3.0.0", y["asyncapi"])
	}
	js, err := json.Marshal(y)
	if err != nil {
		t.Fatal(err)
	}
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(js))
	if err != nil {
		t.Fatal(err)
	}
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft7) // AsyncAPI schemas are a draft-07 superset
	if err := c.AddResource(docURL, doc); err != nil {
		t.Fatal(err)
	}
	s := &spec{doc: y, schemas: map[string]*jsonschema.Schema{}}
	comps := y["components"].(map[string]any)["schemas"].(map[string]any)
	for name := range comps {
		sch, err := c.Compile(docURL + "#/components/schemas/" + name)
		if err != nil {
			t.Fatalf("schema %s: %v", name, err)
		}
		s.schemas[name] = sch
	}
	return s
}

func (s *spec) check(t *testing.T, schema string, data []byte) {
	t.Helper()
	sch := s.schemas[schema]
	if sch == nil {
		t.Fatalf("no schema %s", schema)
	}
	v, err := jsonschema.UnmarshalJSON(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("%s: not JSON: %s", schema, data)
	}
	if err := sch.Validate(v); err != nil {
		t.Errorf("%s does not match the schema %s: %v", data, schema, err)
	}
}

func (s *spec) refuses(t *testing.T, schema, data string) {
	t.Helper()
	v, err := jsonschema.UnmarshalJSON(strings.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	if s.schemas[schema].Validate(v) == nil {
		t.Errorf("schema %s accepts %s", schema, data)
	}
}

var frameSchema = map[string]string{"ready": "Ready", "ack": "Ack", "status": "Status", "response": "Response", "error": "Error", "chunk": "Chunk"}

func TestSpecDescribesEveryChannel(t *testing.T) {
	s := loadSpec(t)
	addrs := map[string]bool{}
	for _, ch := range s.doc["channels"].(map[string]any) {
		addrs[ch.(map[string]any)["address"].(string)] = true
	}
	for _, a := range []string{"/ws", kafka.TopicIncoming, kafka.TopicResponses, kafka.TopicIncoming + ".dlq", kafka.TopicResponses + ".dlq", "chat:{userid}:live"} {
		if !addrs[a] {
			t.Errorf("no channel with address %q", a)
		}
	}
	props := func(name string) map[string]any {
		return s.doc["components"].(map[string]any)["schemas"].(map[string]any)[name].(map[string]any)["properties"].(map[string]any)
	}
	for _, h := range []string{"traceparent", "tracestate", kafka.HeaderCorrelationID, kafka.HeaderMessageID, kafka.HeaderContentType, kafka.HeaderSchemaVersion} {
		if _, ok := props("KafkaHeaders")[h]; !ok {
			t.Errorf("KafkaHeaders lacks %s", h)
		}
	}
	for _, h := range []string{kafka.HeaderDLQReason, kafka.HeaderDLQTopic, kafka.HeaderDLQPartition, kafka.HeaderDLQOffset, kafka.HeaderDLQAttempts, kafka.HeaderDLQTime} {
		if _, ok := props("DLQHeaders")[h]; !ok {
			t.Errorf("DLQHeaders lacks %s", h)
		}
	}
	// Strictness where the server is strict.
	s.refuses(t, "ClientMessage", `{"type":"message","content":"x","userid":"u1","extra":"1"}`)
	s.refuses(t, "ClientMessage", `{"type":"message","content":"x","userid":"not a user"}`)
	s.refuses(t, "ClientResume", `{"type":"resume","cursor":"abc","userid":"u1"}`)
	s.refuses(t, "Response", `{"type":"response","id":"r","content":"x","userid":"u1","timestamp":"2026-01-01T00:00:00.000Z","reply_to":"m","correlation_id":"c","surprise":"1"}`)
}

// An envelope as the services write it to Kafka (and Redis) matches, and so
// do its headers.
func TestEnvelopeMatches(t *testing.T) {
	s := loadSpec(t)
	now := time.Now()
	for _, e := range []*envelope.Envelope{
		{Type: envelope.TypeStatus, State: envelope.StateDelayed, ID: "01STS", ReplyTo: "01MSG", UserID: "u1", Content: "on its way", CorrelationID: "corr-1", Timestamp: now},
		{Type: envelope.TypeMessage, ID: "01MSG", UserID: "u1", Content: "hi", ClientID: "c-1", CorrelationID: "corr-1", Timestamp: now, AcceptedAt: now,
			TraceParent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", TraceState: "k=v"},
		{Type: envelope.TypeResponse, ID: "01RSP", ReplyTo: "01MSG", UserID: "u1", Content: "hello", CorrelationID: "corr-1", Timestamp: now,
			AcceptedAt: now, Question: "hi", Cursor: "1795741934041-1"},
		{Type: envelope.TypeError, ID: "01ERR", ReplyTo: "01MSG", UserID: "u1", Content: "the model refused", CorrelationID: "corr-1", Timestamp: now},
	} {
		rec, err := kafka.EnvelopeRecord(kafka.TopicIncoming, e)
		if err != nil {
			t.Fatal(err)
		}
		s.check(t, "Envelope", rec.Value)
		headers := map[string]string{}
		for _, h := range rec.Headers {
			headers[h.Key] = string(h.Value)
		}
		hb, _ := json.Marshal(headers)
		s.check(t, "KafkaHeaders", hb)
	}
}

// Frames the real services send match the schemas; frames they accept match
// the client schemas.
func TestServiceFramesMatch(t *testing.T) {
	s := loadSpec(t)
	const secret = "contract-test-secret-0123456789abcdef"
	httpAddr, opsAddr := testinfra.FreeAddr(t), testinfra.FreeAddr(t)
	testinfra.StartProcess(t, "devstack", "devstack", []string{
		"HTTP_ADDR=" + httpAddr, "OPS_ADDR=" + opsAddr, "AUTH_SECRET=" + secret,
		"RATE_USER_MESSAGES_PER_MIN=0", "LIMIT_IP_CONNECTS_PER_MIN=0",
	}, "http://"+opsAddr+"/readyz")
	c := testinfra.DialChat(t, "ws://"+httpAddr, secret, "contract-u1")
	c.KeepReady = true // the ready frame is checked too

	validate := func(f testinfra.Frame) {
		t.Helper()
		name, ok := frameSchema[f.Type]
		if !ok {
			t.Fatalf("frame of undocumented type: %s", f.Raw)
		}
		s.check(t, name, []byte(f.Raw))
	}

	good := `{"type":"message","content":"hello contract","userid":"contract-u1","id":"c-1","correlation_id":"corr-contract-1"}`
	s.check(t, "ClientMessage", []byte(good))
	if err := c.SendRaw(good); err != nil {
		t.Fatal(err)
	}
	ready, _ := c.Expect(t, "ready", 15*time.Second)
	validate(ready)
	ack, others := c.Expect(t, "ack", 15*time.Second)
	validate(ack)
	resp, more := c.Expect(t, "response", 15*time.Second)
	validate(resp)
	for _, f := range append(others, more...) {
		validate(f)
	}

	// A minimal message (no optional fields) too.
	if err := c.Send("second", ""); err != nil {
		t.Fatal(err)
	}
	a2, _ := c.Expect(t, "ack", 15*time.Second)
	validate(a2)
	r2, _ := c.Expect(t, "response", 15*time.Second)
	validate(r2)

	for _, bad := range []string{
		`{"type":"nope","userid":"contract-u1"}`,
		`{"type":"message","content":"","userid":"contract-u1","id":"c-2"}`,
		`not json`,
	} {
		if err := c.SendRaw(bad); err != nil {
			t.Fatal(err)
		}
		e, _ := c.Expect(t, "error", 10*time.Second)
		validate(e)
	}

	resume := `{"type":"resume","cursor":"` + resp.Cursor + `","userid":"contract-u1"}`
	s.check(t, "ClientResume", []byte(resume))
	// A new connection resuming after the first answer is replayed the
	// second one, with its cursor.
	rc, _, err := websocket.DefaultDialer.Dial(testinfra.ChatURL("ws://"+httpAddr, secret, "contract-u1")+"&resume="+resp.Cursor, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	replay := &testinfra.ChatClient{Conn: rc, UserID: "contract-u1"}
	rr, _ := replay.Expect(t, "response", 10*time.Second)
	validate(rr)
	if rr.ID != r2.ID {
		t.Fatalf("replayed %s, want %s", rr.Raw, r2.Raw)
	}
}
