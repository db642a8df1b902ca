// univrs_loadgen: the bench's closed-loop load against univrs, in Go (scripts/bench --loadgen go).
//
// A drop-in for the Python bench worker (univrs/bench/workers.py): the same JSON lines on
// stdin and stdout, the same requests on the wire, the same latency histogram. The bench
// builds it with the Debian packages golang-go and golang-github-gorilla-websocket-dev
// (GOPATH mode, nothing downloaded; univrs/bench/gobuild.py) and starts it in place of the
// Python workers. Why: the etcd side of `--compare-etcd` is driven by a Go program that
// spends a few microseconds of CPU per operation; the Python worker spends about 28 (one
// core's worth at 35,000 operations a second), taken from the same two cores the nodes use.
//
// Protocol (as workers.py): a set-up line {"endpoints", "connections", "procs", "proc",
// "keys", "read_nodes", "answer"} answered {"ready": true} once the connections are open
// (or {"ready": false, "error": ...}); then per measurement {"phase", "clients": [indices],
// "start": CLOCK_MONOTONIC seconds, "duration"} answered {"hist", "errors", "error_count",
// "stalled"}; end of input or {"quit": true} ends it.
//
// The wire (univrs/client/protocol.py, the fast protocol): a websocket at /client on a
// node's raft port; a client hello {"univrs": "client", "v": 1}; request frames, CBOR arrays
// of {"id", "op", "args", "key"?, "consistency"?, "timeout_ms", "answer"?}; response frames
// {"leader", "r": [{"id", "ok" | "error", ...}]}. Writes carry an idempotency key from a
// session (session.open), at most SESSION_WINDOW of one session's writes in flight, as the
// Python client's SessionPool does; each connection sends every request queued while its
// previous frame was written in one frame, as the Python client's outbox does.
package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/bits"
	"os"
	"sort"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"github.com/gorilla/websocket"
)

const (
	sessionWindow = 32  // in-flight writes per session (univrs/client/sessions.py)
	maxSessions   = 64  // sessions per connection at most
	maxPerFrame   = 512 // requests per frame (univrs/client/connection.py MAX_PER_FRAME)
	maxErrorsSent = 20
	stallGrace    = 30 * time.Second // univrs/bench/measure.py STALL_GRACE
	callTimeout   = 30 * time.Second // the Python workers' client timeout
	dialTimeout   = 30 * time.Second
	histSub       = 128 // univrs/bench/latency.py SUB
	histShift     = 7   // log2(histSub)
)

var (
	linger    = envDuration("UNIVRS_LOADGEN_LINGER_US", 50*time.Microsecond)
	lingerMax = envDuration("UNIVRS_LOADGEN_LINGER_MAX_US", time.Millisecond)
)

func envDuration(name string, fallback time.Duration) time.Duration {
	var us int64
	if _, err := fmt.Sscan(os.Getenv(name), &us); err == nil && us >= 0 {
		return time.Duration(us) * time.Microsecond
	}
	return fallback
}

// ------------------------------------------------------------------------- CBOR (a subset)

func head(buf []byte, major byte, n uint64) []byte {
	m := major << 5
	switch {
	case n < 24:
		return append(buf, m|byte(n))
	case n < 1<<8:
		return append(buf, m|24, byte(n))
	case n < 1<<16:
		return append(buf, m|25, byte(n>>8), byte(n))
	case n < 1<<32:
		return append(buf, m|26, byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
	}
	return append(buf, m|27, byte(n>>56), byte(n>>48), byte(n>>40), byte(n>>32),
		byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
}

func text(buf []byte, s string) []byte {
	return append(head(buf, 3, uint64(len(s))), s...)
}

var errCBOR = errors.New("malformed CBOR")

// decode reads one item of the subset the fast protocol's responses use (no tags, no
// indefinite lengths); maps with text keys become map[string]any, others map[any]any.
func decode(b []byte, pos int, depth int) (any, int, error) {
	if pos >= len(b) || depth > 64 {
		return nil, pos, errCBOR
	}
	major, info := b[pos]>>5, b[pos]&0x1f
	pos++
	var n uint64
	switch {
	case info < 24:
		n = uint64(info)
	case info <= 27:
		width := 1 << (info - 24)
		if pos+width > len(b) {
			return nil, pos, errCBOR
		}
		for i := 0; i < width; i++ {
			n = n<<8 | uint64(b[pos+i])
		}
		pos += width
	default:
		return nil, pos, errCBOR
	}
	switch major {
	case 0:
		return n, pos, nil
	case 1:
		return -1 - int64(n), pos, nil
	case 2, 3:
		if n > uint64(len(b)-pos) {
			return nil, pos, errCBOR
		}
		end := pos + int(n)
		if major == 2 {
			return append([]byte(nil), b[pos:end]...), end, nil
		}
		return string(b[pos:end]), end, nil
	case 4:
		if n > uint64(len(b)-pos) {
			return nil, pos, errCBOR
		}
		out := make([]any, 0, n)
		for i := uint64(0); i < n; i++ {
			v, next, err := decode(b, pos, depth+1)
			if err != nil {
				return nil, next, err
			}
			out = append(out, v)
			pos = next
		}
		return out, pos, nil
	case 5:
		if n > uint64(len(b)-pos) {
			return nil, pos, errCBOR
		}
		out := make(map[string]any, n)
		for i := uint64(0); i < n; i++ {
			k, next, err := decode(b, pos, depth+1)
			if err != nil {
				return nil, next, err
			}
			v, after, err := decode(b, next, depth+1)
			if err != nil {
				return nil, after, err
			}
			if key, isText := k.(string); isText {
				out[key] = v
			} else {
				out[fmt.Sprint(k)] = v
			}
			pos = after
		}
		return out, pos, nil
	case 7:
		switch info {
		case 20:
			return false, pos, nil
		case 21:
			return true, pos, nil
		case 22, 23:
			return nil, pos, nil
		case 25:
			return float64(halfFloat(uint16(n))), pos, nil
		case 26:
			return float64(math.Float32frombits(uint32(n))), pos, nil
		case 27:
			return math.Float64frombits(n), pos, nil
		}
	}
	return nil, pos, errCBOR
}

func halfFloat(h uint16) float32 {
	sign := uint32(h>>15) << 31
	exp := int(h>>10) & 0x1f
	frac := uint32(h & 0x3ff)
	switch exp {
	case 0:
		return math.Float32frombits(sign) + float32(frac)*float32(math.Pow(2, -24))*sign1(sign)
	case 31:
		return math.Float32frombits(sign | 0x7f800000 | frac<<13)
	}
	return math.Float32frombits(sign | uint32(exp+112)<<23 | frac<<13)
}

func sign1(sign uint32) float32 {
	if sign != 0 {
		return -1
	}
	return 1
}

func decodeAll(b []byte) (any, error) {
	v, end, err := decode(b, 0, 0)
	if err == nil && end != len(b) {
		err = errCBOR
	}
	return v, err
}

// ------------------------------------------------------------------------- one connection

type result struct {
	ok      any
	err     string // "code: message" when the request failed
	code    string // the error's code
	unknown bool   // an attempt's outcome is unknown: a failed write may have applied
}

// unknownOutcome: errors after which a write may or may not have applied.
var unknownOutcome = map[string]bool{"timeout": true, "outcome-unknown": true,
	"connection-lost": true}

// transient errors are retried until the operation's deadline, with the same key, as the
// Python client retries Unavailable and its kinds (univrs/client/client.py _call).
var transient = map[string]bool{"unavailable": true, "not-leader": true, "timeout": true,
	"outcome-unknown": true, "connection-lost": true, "rate-limited": true}

func failed(code, message string) result {
	return result{err: code + ": " + message, code: code}
}

type call struct {
	id       uint64
	item     []byte // the request's CBOR map
	done     chan result
	deadline time.Time // answered "timeout" by the connection's sweeper after it
}

type session struct {
	clientID    string
	next        uint64
	outstanding map[uint64]struct{}
}

func (s *session) oldest() uint64 {
	first := true
	var low uint64
	for seq := range s.outstanding {
		if first || seq < low {
			low, first = seq, false
		}
	}
	return low
}

// conn is one websocket to a node: a writer goroutine sends every queued request in one
// frame, a reader goroutine hands each response to its caller.
type conn struct {
	ws      *websocket.Conn
	queue   chan *call
	mu      sync.Mutex
	pending map[uint64]*call
	nextID  uint64
	broken  error
	minimal bool
	// Callers answered that have not sent their next request yet (the writer waits for them).
	answered atomic.Int64

	smu      sync.Mutex
	scond    *sync.Cond
	sessions []*session
	opening  bool
}

func dialOne(address string) (*websocket.Conn, map[string]any, error) {
	dialer := websocket.Dialer{HandshakeTimeout: dialTimeout, ReadBufferSize: 1 << 16,
		WriteBufferSize: 1 << 16}
	ws, _, err := dialer.Dial("ws://"+address+"/client", nil)
	if err != nil {
		return nil, nil, err
	}
	hello := text(text(head(nil, 5, 2), "univrs"), "client") // {"univrs": "client", "v": 1}
	hello = head(text(hello, "v"), 0, 1)
	if err := ws.WriteMessage(websocket.BinaryMessage, hello); err != nil {
		ws.Close()
		return nil, nil, err
	}
	ws.SetReadDeadline(time.Now().Add(dialTimeout))
	_, data, err := ws.ReadMessage()
	ws.SetReadDeadline(time.Time{})
	if err != nil {
		ws.Close()
		return nil, nil, err
	}
	doc, err := decodeAll(data)
	m, isMap := doc.(map[string]any)
	if err != nil || !isMap || m["univrs"] != "client" || m["v"] != uint64(1) {
		ws.Close()
		return nil, nil, fmt.Errorf("%s: not a univrs client hello", address)
	}
	if e, refused := m["error"]; refused {
		ws.Close()
		return nil, nil, fmt.Errorf("%s refused the connection: %v", address, e)
	}
	return ws, m, nil
}

// dial opens a connection to pinned, or (pinned empty) to the leader of the cluster
// endpoints belong to, following the hello's leader hint as the Python client does.
func dial(endpoints []string, pinned string) (*conn, error) {
	deadline := time.Now().Add(dialTimeout)
	var last error
	for time.Now().Before(deadline) {
		targets := endpoints
		if pinned != "" {
			targets = []string{pinned}
		}
		for _, address := range targets {
			ws, hello, err := dialOne(address)
			if err != nil {
				last = err
				continue
			}
			leader, _ := hello["leader"].(string)
			if pinned == "" && leader != hello["node"] {
				ws.Close()
				members, _ := hello["members"].(map[string]any)
				info, _ := members[leader].(map[string]any)
				if addr, ok := info["client"].(string); ok && leader != "" {
					if ws, hello, err = dialOne(addr); err == nil && hello["leader"] == hello["node"] {
						return newConn(ws, hello), nil
					} else if err == nil {
						ws.Close()
					}
				}
				last = fmt.Errorf("%s: no leader to follow yet", address)
				continue
			}
			return newConn(ws, hello), nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return nil, fmt.Errorf("no connection within %s: %v", dialTimeout, last)
}

func newConn(ws *websocket.Conn, hello map[string]any) *conn {
	c := &conn{ws: ws, queue: make(chan *call, 4096), pending: map[uint64]*call{}}
	if answers, ok := hello["answers"].([]any); ok {
		for _, a := range answers {
			c.minimal = c.minimal || a == "minimal"
		}
	}
	c.scond = sync.NewCond(&c.smu)
	go c.write()
	go c.read()
	go c.expire()
	return c
}

func (c *conn) fail(err error) {
	c.mu.Lock()
	if c.broken == nil {
		c.broken = err
	}
	pending := c.pending
	c.pending = map[uint64]*call{}
	c.mu.Unlock()
	for _, k := range pending {
		c.answered.Add(1)
		k.done <- failed("connection-lost", err.Error())
	}
	c.ws.Close()
}

func (c *conn) write() {
	frame := make([]byte, 0, 1<<16)
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for first := range c.queue {
		batch := []*call{first}
		// Gather: while a caller that was just answered has not sent its next request yet
		// (answered), wait for it (at most lingerMax after the first), so that the
		// requests a frame of answers sets off travel in one frame, as the Python client's
		// outbox sends everything its tasks queued in one scheduling round (a node pays per
		// frame: a frame per request doubled the leader's CPU per read). A lone caller's
		// request goes at once.
		deadline := time.Now().Add(lingerMax)
	gather:
		for len(batch) < maxPerFrame {
			select {
			case k := <-c.queue:
				batch = append(batch, k)
				continue
			default:
			}
			wait := time.Until(deadline)
			if wait <= 0 || c.answered.Load() <= 0 {
				break
			}
			if wait > linger {
				wait = linger
			}
			timer.Reset(wait)
			select {
			case k := <-c.queue:
				if !timer.Stop() {
					<-timer.C
				}
				batch = append(batch, k)
			case <-timer.C:
				break gather
			}
		}
		frame = head(frame[:0], 4, uint64(len(batch)))
		for _, k := range batch {
			frame = append(frame, k.item...)
		}
		if err := c.ws.WriteMessage(websocket.BinaryMessage, frame); err != nil {
			c.fail(err)
			return
		}
	}
}

func (c *conn) read() {
	for {
		_, data, err := c.ws.ReadMessage()
		if err != nil {
			c.fail(err)
			return
		}
		doc, err := decodeAll(data)
		m, isMap := doc.(map[string]any)
		rs, isList := m["r"].([]any)
		if err != nil || !isMap || !isList {
			c.fail(fmt.Errorf("a malformed response frame"))
			return
		}
		type hit struct {
			k *call
			r map[string]any
		}
		hits := make([]hit, 0, len(rs))
		c.mu.Lock()
		for _, item := range rs {
			r, _ := item.(map[string]any)
			id, _ := r["id"].(uint64)
			if k := c.pending[id]; k != nil {
				delete(c.pending, id)
				hits = append(hits, hit{k, r})
			}
		}
		c.mu.Unlock()
		// Every caller of the frame counts as about to send before any of them is woken:
		// the writer then waits for all of them (one request frame per response frame).
		c.answered.Add(int64(len(hits)))
		for _, h := range hits {
			if e, bad := h.r["error"].(map[string]any); bad {
				code, _ := e["code"].(string)
				h.k.done <- failed(code, fmt.Sprint(e["message"]))
			} else {
				h.k.done <- result{ok: h.r["ok"]}
			}
		}
	}
}

// expire answers "timeout" to every request unanswered past its deadline (the Python
// connection's timer does the same), so that no caller, session number or session opening
// waits forever on an answer that never comes.
func (c *conn) expire() {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for now := range tick.C {
		var late []*call
		c.mu.Lock()
		if c.broken != nil {
			c.mu.Unlock()
			return
		}
		for id, k := range c.pending {
			if now.After(k.deadline) {
				delete(c.pending, id)
				late = append(late, k)
			}
		}
		c.mu.Unlock()
		for _, k := range late {
			c.answered.Add(1)
			k.done <- failed("timeout", "no answer within the deadline; the outcome is unknown")
		}
	}
}

// request sends one request (build writes its map's fields after "id") and waits for
// its response.
func (c *conn) request(fields int, build func([]byte) []byte, done chan result) result {
	c.answered.Add(-1)
	c.mu.Lock()
	if c.broken != nil {
		err := c.broken
		c.mu.Unlock()
		c.answered.Add(1)
		return failed("connection-lost", err.Error())
	}
	c.nextID++
	id := c.nextID
	item := head(text(head(make([]byte, 0, 128), 5, uint64(fields+1)), "id"), 0, id)
	k := &call{id: id, item: build(item), done: done, deadline: time.Now().Add(callTimeout)}
	c.pending[id] = k
	c.mu.Unlock()
	c.queue <- k
	return <-done
}

// lease hands out the next sequence number of a session with room in its window, opening a
// session when every one is full (as univrs/client/sessions.py's SessionPool).
func (c *conn) lease(done chan result) (*session, uint64, error) {
	c.smu.Lock()
	defer c.smu.Unlock()
	for {
		for _, s := range c.sessions {
			if len(s.outstanding) == 0 || s.next < s.oldest()+sessionWindow {
				seq := s.next
				s.next++
				s.outstanding[seq] = struct{}{}
				return s, seq, nil
			}
		}
		if len(c.sessions) < maxSessions && !c.opening {
			c.opening = true
			c.smu.Unlock()
			r := retried(func(deadline time.Time) result {
				return c.request(3, func(b []byte) []byte {
					b = text(text(b, "op"), "session.open")
					b = head(text(b, "args"), 5, 0)
					return head(text(b, "timeout_ms"), 0, remainingMS(deadline))
				}, done)
			})
			c.smu.Lock()
			c.opening = false
			c.scond.Broadcast()
			if r.err != "" {
				return nil, 0, errors.New(r.err)
			}
			doc, _ := r.ok.(map[string]any)
			id, ok := doc["client_id"].(string)
			if !ok {
				return nil, 0, errors.New("session.open answered no client_id")
			}
			c.sessions = append(c.sessions, &session{clientID: id, next: 1,
				outstanding: map[uint64]struct{}{}})
			continue
		}
		c.answered.Add(-1) // not about to send while it waits for a number
		c.scond.Wait()
		c.answered.Add(1)
	}
}

// drop forgets a session the cluster no longer has (session-expired).
func (c *conn) drop(s *session) {
	c.smu.Lock()
	defer c.smu.Unlock()
	for i, t := range c.sessions {
		if t == s {
			c.sessions = append(c.sessions[:i], c.sessions[i+1:]...)
			c.scond.Broadcast()
			return
		}
	}
}

// closeSessions ends this connection's sessions (best effort, within about a second), as
// the Python client does when it closes: they would otherwise stay in the replicated
// session table until they expire.
func (c *conn) closeSessions() {
	c.smu.Lock()
	sessions := append([]*session(nil), c.sessions...)
	c.sessions = nil
	c.smu.Unlock()
	done := make(chan result, 1)
	end := time.Now().Add(time.Second)
	for _, s := range sessions {
		if time.Now().After(end) {
			return
		}
		c.answered.Add(1)
		id := s.clientID
		c.request(3, func(b []byte) []byte {
			b = text(text(b, "op"), "session.close")
			b = text(text(head(text(b, "args"), 5, 1), "client_id"), id)
			return head(text(b, "timeout_ms"), 0, 500)
		}, done)
		c.answered.Add(-1)
	}
}

func (c *conn) release(s *session, seq uint64) {
	c.smu.Lock()
	delete(s.outstanding, seq)
	c.scond.Broadcast()
	c.smu.Unlock()
}

// ------------------------------------------------------------------------- the operations

var writeCounter atomic.Uint64

func remainingMS(deadline time.Time) uint64 {
	ms := time.Until(deadline).Milliseconds()
	if ms < 1 {
		ms = 1
	}
	return uint64(ms)
}

// retried runs attempt until it succeeds, fails other than transiently, or its deadline
// (callTimeout from now) passes, pausing 10 ms doubling to 500 ms between attempts.
func retried(attempt func(deadline time.Time) result) result {
	deadline := time.Now().Add(callTimeout)
	pause := 10 * time.Millisecond
	unknown := false
	for {
		r := attempt(deadline)
		unknown = unknown || unknownOutcome[r.code]
		r.unknown = unknown && r.err != ""
		if r.err == "" || !transient[r.code] || !time.Now().Add(pause).Before(deadline) {
			return r
		}
		time.Sleep(pause)
		if pause *= 2; pause > 500*time.Millisecond {
			pause = 500 * time.Millisecond
		}
	}
}

func writeOp(c *conn, key string, replicas uint64, answer string, done chan result) result {
	for attempt := 0; ; attempt++ {
		s, seq, err := c.lease(done)
		if err != nil {
			return failed("session", err.Error())
		}
		fields := 4 // op, args, key, timeout_ms
		sendAnswer := answer == "minimal" && c.minimal
		if sendAnswer {
			fields++
		}
		// Retries keep the key: a retry after an unknown outcome is answered with the
		// first response, never applied twice.
		r := retried(func(deadline time.Time) result {
			return c.request(fields, func(b []byte) []byte {
				b = text(text(b, "op"), "workload.scale")
				b = text(text(head(text(b, "args"), 5, 2), "id"), key)
				b = head(text(b, "replicas"), 0, replicas)
				b = text(head(text(b, "key"), 4, 2), s.clientID)
				b = head(b, 0, seq)
				b = head(text(b, "timeout_ms"), 0, remainingMS(deadline))
				if sendAnswer {
					b = text(text(b, "answer"), "minimal")
				}
				return b
			}, done)
		})
		c.release(s, seq)
		if r.code == "session-expired" && attempt == 0 && !r.unknown {
			c.drop(s) // gone (expired or evicted): once more under a new session
			continue
		}
		return r
	}
}

func readOp(c *conn, key, consistency string, done chan result) result {
	return retried(func(deadline time.Time) result {
		return c.request(4, func(b []byte) []byte {
			b = text(text(b, "op"), "workload.get")
			b = text(text(head(text(b, "args"), 5, 1), "id"), key)
			b = text(text(b, "consistency"), consistency)
			return head(text(b, "timeout_ms"), 0, remainingMS(deadline))
		}, done)
	})
}

// ------------------------------------------------------------------------- the histogram

type histogram struct {
	counts       map[int]int64
	count, total int64
	min, max     int64
}

func newHistogram() *histogram { return &histogram{counts: map[int]int64{}, min: -1, max: -1} }

func (h *histogram) record(d time.Duration) {
	us := d.Microseconds()
	if us < 0 {
		us = 0
	}
	index := int(us)
	if us >= histSub {
		shift := bits.Len64(uint64(us)) - 1 - histShift
		index = histSub*shift + int(us>>shift)
	}
	h.counts[index]++
	h.count++
	h.total += us
	if h.min < 0 || us < h.min {
		h.min = us
	}
	if us > h.max {
		h.max = us
	}
}

func (h *histogram) merge(o *histogram) {
	for i, n := range o.counts {
		h.counts[i] += n
	}
	h.count += o.count
	h.total += o.total
	if o.min >= 0 && (h.min < 0 || o.min < h.min) {
		h.min = o.min
	}
	if o.max > h.max {
		h.max = o.max
	}
}

func (h *histogram) toJSON() map[string]any {
	indices := make([]int, 0, len(h.counts))
	for i := range h.counts {
		indices = append(indices, i)
	}
	sort.Ints(indices)
	counts := make([][2]int64, 0, len(indices))
	for _, i := range indices {
		counts = append(counts, [2]int64{int64(i), h.counts[i]})
	}
	var low, high any
	if h.min >= 0 {
		low, high = h.min, h.max
	}
	return map[string]any{"counts": counts, "count": h.count, "total_us": h.total,
		"min_us": low, "max_us": high}
}

// ------------------------------------------------------------------------- the worker

type setup struct {
	Endpoints   []string `json:"endpoints"`
	Connections int      `json:"connections"`
	Procs       int      `json:"procs"`
	Proc        int      `json:"proc"`
	Keys        int      `json:"keys"`
	ReadNodes   []string `json:"read_nodes"`
	Answer      string   `json:"answer"`
}

type command struct {
	Phase    string  `json:"phase"`
	Clients  []int   `json:"clients"`
	Start    float64 `json:"start"`
	Duration float64 `json:"duration"`
	Quit     bool    `json:"quit"`
	// The linearizability sample, run here (univrs/bench/sample.py worker_spec).
	Sample *sampleSpec `json:"sample"`
}

type sampleSpec struct {
	Clients     []int            `json:"clients"`
	Values      map[string]int64 `json:"values"`
	NextProcess int64            `json:"next_process"`
	ReadPause   float64          `json:"read_pause"`
	MaxOps      int              `json:"max_ops"`
}

// sampler records the history of the sampled keys as univrs/bench/sample.py does: each
// sampled client writes unique values (the key's last value plus one) while the key's paced
// reader reads it linearizably; every operation's invocation and completion are recorded,
// in the order they happen (the timestamp is taken under the lock), for the bench's checker.
type sampler struct {
	mu       sync.Mutex
	spec     *sampleSpec
	events   [][6]any
	ops      map[string]int
	done     map[string]bool
	base     float64 // CLOCK_MONOTONIC at t0
	t0       time.Time
	nextProc int64
}

func newSampler(spec *sampleSpec, keys []string) *sampler {
	smp := &sampler{spec: spec, ops: map[string]int{}, done: map[string]bool{},
		nextProc: spec.NextProcess, t0: time.Now()}
	smp.base = monotonic()
	for _, i := range spec.Clients {
		smp.ops[keys[i]] = 0
	}
	return smp
}

func (smp *sampler) sampled(key string) bool {
	_, ok := smp.ops[key]
	return ok
}

func (smp *sampler) writing(key string) bool {
	smp.mu.Lock()
	defer smp.mu.Unlock()
	_, ok := smp.ops[key]
	return ok && !smp.done[key]
}

func (smp *sampler) newProcess() int64 {
	smp.mu.Lock()
	defer smp.mu.Unlock()
	smp.nextProc++
	return smp.nextProc - 1
}

// record appends one event; the caller holds mu.
func (smp *sampler) record(process int64, kind, f, key string, value any) {
	if kind == "invoke" {
		smp.ops[key]++
	}
	at := smp.base + time.Since(smp.t0).Seconds()
	smp.events = append(smp.events, [6]any{process, kind, f, key, value, at})
}

// write writes the key's next unique value, recorded; the process id to go on with (a new
// one after an unknown outcome, as a client that may have applied it cannot tell).
func (smp *sampler) write(c *conn, key string, process int64, answer string,
	done chan result) (int64, result) {
	smp.mu.Lock()
	smp.spec.Values[key]++
	value := smp.spec.Values[key]
	smp.record(process, "invoke", "write", key, value)
	smp.mu.Unlock()
	r := writeOp(c, key, uint64(value), answer, done)
	smp.mu.Lock()
	defer smp.mu.Unlock()
	switch {
	case r.err == "":
		smp.record(process, "ok", "write", key, value)
	case r.unknown:
		smp.record(process, "info", "write", key, value)
		smp.nextProc++
		return smp.nextProc - 1, r
	default:
		smp.record(process, "fail", "write", key, value)
	}
	return process, r
}

// read is one paced reader of key: linearizable reads until stop or the key's operations
// reach max_ops; the key's writer records no more once it is done.
func (smp *sampler) read(c *conn, key string, stop time.Time) {
	defer func() {
		smp.mu.Lock()
		smp.done[key] = true
		smp.mu.Unlock()
	}()
	process := smp.newProcess()
	done := make(chan result, 1)
	pause := time.Duration(smp.spec.ReadPause * float64(time.Second))
	c.answered.Add(1)
	defer c.answered.Add(-1)
	for time.Now().Before(stop) {
		smp.mu.Lock()
		full := smp.ops[key] >= smp.spec.MaxOps
		if !full {
			smp.record(process, "invoke", "read", key, nil)
		}
		smp.mu.Unlock()
		if full {
			return
		}
		r := readOp(c, key, "linearizable", done)
		smp.mu.Lock()
		if r.err != "" {
			smp.record(process, "info", "read", key, nil)
			smp.nextProc++
			process = smp.nextProc - 1
		} else {
			doc, _ := r.ok.(map[string]any)
			spec, _ := doc["spec"].(map[string]any)
			smp.record(process, "ok", "read", key, spec["replicas"])
		}
		smp.mu.Unlock()
		c.answered.Add(-1) // pacing, not about to send
		time.Sleep(pause)
		c.answered.Add(1)
	}
}

func (smp *sampler) answer() map[string]any {
	smp.mu.Lock()
	defer smp.mu.Unlock()
	return map[string]any{"events": smp.events, "values": smp.spec.Values,
		"next_process": smp.nextProc}
}

// plan is univrs/bench/workers.py connection_plan: per connection the node it is pinned to
// ("" follows the leader).
func plan(connections, procs int, nodes []string, proc int) []string {
	per := (connections + procs - 1) / procs
	if per < 1 {
		per = 1
	}
	if len(nodes) == 0 {
		return make([]string, per)
	}
	per = (per + len(nodes) - 1) / len(nodes) * len(nodes)
	out := make([]string, per)
	for j := range out {
		out[j] = nodes[(j+proc)%len(nodes)]
	}
	return out
}

func openAll(endpoints []string, pins []string) ([]*conn, error) {
	out := make([]*conn, 0, len(pins))
	for _, pin := range pins {
		c, err := dial(endpoints, pin)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, nil
}

// monotonic is CLOCK_MONOTONIC in seconds, the clock the bench's "start" is on.
func monotonic() float64 {
	var ts syscall.Timespec
	syscall.Syscall(syscall.SYS_CLOCK_GETTIME, 1, uintptr(unsafe.Pointer(&ts)), 0)
	return float64(ts.Sec) + float64(ts.Nsec)/1e9
}

func measure(cmd command, conns []*conn, keys []string, answer string) map[string]any {
	now := time.Now()
	start := now.Add(time.Duration((cmd.Start - monotonic()) * float64(time.Second)))
	stop := start.Add(time.Duration(cmd.Duration * float64(time.Second)))
	position := map[int]int{}
	for k, i := range cmd.Clients {
		position[i] = k
	}
	type own struct {
		sync.Mutex
		h *histogram
	}
	hists := make([]*own, len(cmd.Clients))
	for k := range hists {
		hists[k] = &own{h: newHistogram()}
	}
	var mu sync.Mutex
	var errs []string
	errCount := 0
	var wg sync.WaitGroup
	var smp *sampler
	if cmd.Sample != nil && cmd.Phase == "writes" {
		smp = newSampler(cmd.Sample, keys)
		for j, i := range cmd.Sample.Clients {
			// As the Python readers: another connection than the key's writer's.
			reader := conns[(position[i]+1)%len(conns)]
			wg.Add(1)
			go func(key string, j int) {
				defer wg.Done()
				smp.read(reader, key, stop)
			}(keys[i], j)
		}
	}
	for n, i := range cmd.Clients {
		wg.Add(1)
		mine := hists[n]
		go func(i int) {
			defer wg.Done()
			c := conns[position[i]%len(conns)]
			// A caller about to send (its first request); one that has stopped is not.
			c.answered.Add(1)
			defer c.answered.Add(-1)
			key := keys[i]
			done := make(chan result, 1)
			var process int64
			if smp != nil && smp.sampled(key) {
				process = smp.newProcess()
			}
			for {
				begun := time.Now()
				if !begun.Before(stop) {
					break
				}
				var r result
				switch cmd.Phase {
				case "writes":
					if smp != nil && smp.writing(key) {
						process, r = smp.write(c, key, process, answer, done)
					} else {
						r = writeOp(c, key, writeCounter.Add(1)%10, answer, done)
					}
				case "reads":
					r = readOp(c, key, "linearizable", done)
				default:
					r = readOp(c, key, "lease", done)
				}
				if r.err != "" {
					mu.Lock()
					errCount++
					if len(errs) < maxErrorsSent {
						errs = append(errs, r.err)
					}
					mu.Unlock()
					if r.code == "connection-lost" {
						// Not reconnected (a bench's cluster keeps its connections): do not
						// spin on it, and do not hold the connection's frames meanwhile.
						c.answered.Add(-1)
						time.Sleep(100 * time.Millisecond)
						c.answered.Add(1)
					}
					continue
				}
				if !begun.Before(start) {
					elapsed := time.Since(begun)
					mine.Lock()
					mine.h.record(elapsed)
					mine.Unlock()
				}
			}
		}(i)
	}
	finished := make(chan struct{})
	go func() { wg.Wait(); close(finished) }()
	stalled := false
	select {
	case <-finished:
	case <-time.After(time.Until(stop.Add(stallGrace))):
		stalled = true
	}
	// Every loop's latencies so far, stalled ones included (the Python loops record each
	// operation as it completes).
	hist := newHistogram()
	for _, o := range hists {
		o.Lock()
		hist.merge(o.h)
		o.Unlock()
	}
	mu.Lock()
	defer mu.Unlock()
	if errs == nil {
		errs = []string{}
	}
	out := map[string]any{"hist": hist.toJSON(), "errors": errs, "error_count": errCount,
		"stalled": stalled}
	if smp != nil {
		out["sample"] = smp.answer()
	}
	return out
}

func main() {
	in := bufio.NewReaderSize(os.Stdin, 1<<20)
	out := json.NewEncoder(os.Stdout)
	line, err := in.ReadBytes('\n')
	var cfg setup
	if err == nil {
		err = json.Unmarshal(line, &cfg)
	}
	if err != nil {
		out.Encode(map[string]any{"ready": false, "error": "set-up line: " + err.Error()})
		os.Exit(2)
	}
	if cfg.Answer == "" {
		cfg.Answer = "minimal" // as the Python worker's default
	}
	keys := make([]string, cfg.Keys)
	for i := range keys {
		keys[i] = fmt.Sprintf("bench-%d", i)
	}
	writers, err := openAll(cfg.Endpoints, plan(cfg.Connections, cfg.Procs, nil, 0))
	readers := writers
	if err == nil && len(cfg.ReadNodes) > 0 {
		readers, err = openAll(cfg.Endpoints, plan(cfg.Connections, cfg.Procs, cfg.ReadNodes, cfg.Proc))
	}
	if err != nil {
		out.Encode(map[string]any{"ready": false, "error": err.Error()})
		os.Exit(1)
	}
	out.Encode(map[string]any{"ready": true})
	defer func() {
		for _, c := range writers {
			c.closeSessions()
		}
	}()
	for {
		line, err := in.ReadBytes('\n')
		if err != nil {
			return // end of input: the bench is done (or gone)
		}
		var cmd command
		if err := json.Unmarshal(line, &cmd); err != nil {
			fmt.Fprintln(os.Stderr, "bad command:", err)
			return
		}
		if cmd.Quit {
			return
		}
		conns := readers
		if cmd.Phase == "writes" {
			conns = writers
		}
		out.Encode(measure(cmd, conns, keys, cfg.Answer))
	}
}
