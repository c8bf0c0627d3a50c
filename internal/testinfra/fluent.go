package testinfra

import (
	"bufio"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"maps"
	"net"
	"slices"
	"strings"
	"time"
)

// FluentRecord is one record of the Fluentd Forward protocol as Docker's
// fluentd logging driver sends a line of a container's output: the line in
// `log`, and container_id, container_name, source and the fields its
// `labels`/`env` options add, all strings.
type FluentRecord struct {
	Tag    string
	Time   time.Time
	Fields map[string]string
}

// DockerLogRecords turns a container's output into the records Docker's
// fluentd driver sends for it: one per line (stdout or stderr as source
// says), with the driver's fields and extra (from its labels/env options).
func DockerLogRecords(tag, container string, extra map[string]string, output string, source func(line string) string) []FluentRecord {
	var out []FluentRecord
	id := sha256.Sum256([]byte(container)) // a stand-in for the 64-hex container id
	now := time.Now()
	for i, line := range strings.Split(strings.TrimSuffix(output, "\n"), "\n") {
		f := map[string]string{
			"container_id":   hex.EncodeToString(id[:]),
			"container_name": "/" + container,
			"source":         source(line),
			"log":            line,
		}
		maps.Copy(f, extra)
		out = append(out, FluentRecord{Tag: tag, Time: now.Add(time.Duration(i) * time.Microsecond), Fields: f})
	}
	return out
}

// SendFluent sends records to a Forward-protocol receiver (message mode,
// EventTime timestamps: Docker's driver with fluentd-sub-second-precision)
// over one connection.
func SendFluent(addr string, records []FluentRecord) error {
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return fmt.Errorf("fluent forward: %w", err)
	}
	w := bufio.NewWriter(conn)
	for _, r := range records {
		if _, err := w.Write(r.appendMsgpack(nil)); err != nil {
			_ = conn.Close()
			return fmt.Errorf("fluent forward: %w", err)
		}
	}
	if err := w.Flush(); err != nil {
		_ = conn.Close()
		return fmt.Errorf("fluent forward: %w", err)
	}
	if err := conn.Close(); err != nil {
		return fmt.Errorf("fluent forward: %w", err)
	}
	return nil
}

// appendMsgpack encodes r as the message-mode entry [tag, time, record].
func (r FluentRecord) appendMsgpack(b []byte) []byte {
	b = append(b, 0x93) // fixarray of 3
	b = msgpackStr(b, r.Tag)
	// EventTime: ext type 0, seconds and nanoseconds as big-endian uint32.
	b = append(b, 0xd7, 0x00)
	b = binary.BigEndian.AppendUint32(b, uint32(r.Time.Unix()))
	b = binary.BigEndian.AppendUint32(b, uint32(r.Time.Nanosecond()))
	if n := len(r.Fields); n < 16 {
		b = append(b, 0x80|byte(n))
	} else {
		b = append(b, 0xde)
		b = binary.BigEndian.AppendUint16(b, uint16(n))
	}
	for _, k := range slices.Sorted(maps.Keys(r.Fields)) {
		b = msgpackStr(msgpackStr(b, k), r.Fields[k])
	}
	return b
}

func msgpackStr(b []byte, s string) []byte {
	switch n := len(s); {
	case n < 32:
		b = append(b, 0xa0|byte(n))
	case n < 1<<8:
		b = append(b, 0xd9, byte(n))
	case n < 1<<16:
		b = append(b, 0xda)
		b = binary.BigEndian.AppendUint16(b, uint16(n))
	default:
		b = append(b, 0xdb)
		b = binary.BigEndian.AppendUint32(b, uint32(n))
	}
	return append(b, s...)
}
