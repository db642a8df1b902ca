// One websocket to a node (univrs/client/connection.py's counterpart): frames out and in,
// deadlines, and the idempotency sessions of its writes.
package main

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
)

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
			if raw, bad := h.r["error"]; bad {
				// Any error field is an error (a malformed one too: never taken as an answer).
				e, _ := raw.(map[string]any)
				code, _ := e["code"].(string)
				if code == "" {
					code = "malformed-error"
				}
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
