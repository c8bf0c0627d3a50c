package loadgen

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// The server metrics a report shows; samples of a name are added up (a
// metric may carry labels such as service="websocket-server").
const (
	metricRSS        = "process_resident_memory_bytes"
	metricGoroutines = "go_goroutines"
	metricWSConns    = "chat_ws_connections"
)

// parseMetrics reads the Prometheus text exposition (or OpenMetrics) and
// picks the report's metrics.
func parseMetrics(r io.Reader) (ServerSample, error) {
	var s ServerSample
	found := false
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		name, rest := line, ""
		if i := strings.IndexAny(line, "{ "); i >= 0 {
			name, rest = line[:i], line[i:]
		}
		var dst *int64
		switch name {
		case metricRSS:
			dst = &s.RSSBytes
		case metricGoroutines:
			dst = &s.Goroutines
		case metricWSConns:
			dst = &s.WSConnections
		default:
			continue
		}
		if strings.HasPrefix(rest, "{") {
			end := labelsEnd(rest)
			if end < 0 {
				continue
			}
			rest = rest[end+1:]
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			continue
		}
		v, err := strconv.ParseFloat(f[0], 64)
		if err != nil {
			continue
		}
		*dst += int64(v)
		found = true
	}
	if err := sc.Err(); err != nil {
		return s, err
	}
	if !found {
		return s, fmt.Errorf("none of %s, %s, %s exposed", metricRSS, metricGoroutines, metricWSConns)
	}
	return s, nil
}

// labelsEnd is the index of the '}' closing the label set that s starts
// with, skipping quoted values.
func labelsEnd(s string) int {
	inQuote := false
	for i := 1; i < len(s); i++ {
		switch c := s[i]; {
		case inQuote && c == '\\':
			i++
		case c == '"':
			inQuote = !inQuote
		case !inQuote && c == '}':
			return i
		}
	}
	return -1
}

// scraper samples every -metrics URL at the phases of the run and keeps the
// maxima of every scrape as the peak.
type scraper struct {
	client *http.Client
	mu     sync.Mutex
	stats  []ServerStats
}

func newScraper(urls []string) *scraper {
	s := &scraper{client: &http.Client{Timeout: 10 * time.Second}}
	for _, u := range urls {
		s.stats = append(s.stats, ServerStats{URL: u})
	}
	return s
}

func (s *scraper) scrape(url string) (ServerSample, error) {
	resp, err := s.client.Get(url)
	if err != nil {
		return ServerSample{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return ServerSample{}, fmt.Errorf("HTTP %d", resp.StatusCode)
	}
	return parseMetrics(resp.Body)
}

// sample scrapes every target now and files the sample under phase ("" for
// a periodic scrape that only feeds the peak).
func (s *scraper) sample(phase string) {
	var wg sync.WaitGroup
	for i := range s.stats {
		wg.Add(1)
		go func() {
			defer wg.Done()
			smp, err := s.scrape(s.stats[i].URL)
			s.mu.Lock()
			defer s.mu.Unlock()
			st := &s.stats[i]
			st.Scrapes++
			if err != nil {
				st.ScrapeErrors++
				st.LastError = err.Error()
				return
			}
			if st.Peak == nil {
				st.Peak = &ServerSample{}
			}
			st.Peak.RSSBytes = max(st.Peak.RSSBytes, smp.RSSBytes)
			st.Peak.Goroutines = max(st.Peak.Goroutines, smp.Goroutines)
			st.Peak.WSConnections = max(st.Peak.WSConnections, smp.WSConnections)
			p := &smp
			switch phase {
			case phaseBefore:
				st.Before = p
			case phaseConnected:
				st.Connected = p
			case phaseDrained:
				st.End = p
			case phaseAfter:
				st.After = p
			}
		}()
	}
	wg.Wait()
}

// settle waits until every server holds no more sockets than before the
// run (the closes are processed) or the deadline passes.
func (s *scraper) settle(deadline time.Time) {
	for time.Now().Before(deadline) {
		done := true
		for i := range s.stats {
			s.mu.Lock()
			before := s.stats[i].Before
			s.mu.Unlock()
			if before == nil {
				continue
			}
			smp, err := s.scrape(s.stats[i].URL)
			if err != nil || smp.WSConnections > before.WSConnections {
				done = false
				break
			}
		}
		if done {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// every scrapes periodically until the returned function is called.
func (s *scraper) every(interval time.Duration) (stop func()) {
	if len(s.stats) == 0 {
		return func() {}
	}
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				s.sample("")
			}
		}
	}()
	return func() { close(done); <-finished }
}

func (s *scraper) results() []ServerStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]ServerStats, len(s.stats))
	copy(out, s.stats)
	for i := range out {
		st := &out[i]
		if st.Before != nil && st.Connected != nil {
			if dc := st.Connected.WSConnections - st.Before.WSConnections; dc > 0 {
				st.RSSPerConnection = float64(st.Connected.RSSBytes-st.Before.RSSBytes) / float64(dc)
			}
		}
	}
	return out
}
