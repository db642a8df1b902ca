// univrs_loadgen: the bench's closed-loop load against univrs, in Go (scripts/bench --loadgen go).
//
// A drop-in for the Python bench worker (univrs/bench/workers.py): the same JSON lines on
// stdin and stdout, the same requests on the wire, the same latency histogram. The bench
// builds it with the Debian packages golang-go and golang-github-gorilla-websocket-dev
// (GOPATH mode, nothing downloaded; univrs/bench/gobuild.py) and starts it in place of the
// Python workers. Why: the etcd side of `--compare-etcd` is driven by a Go program; the
// Python workers spend 0.054-0.058 ms of CPU per write at 64 clients, taken from the same
// two cores the nodes use, where this one spends 0.013-0.020 (etcd's gRPC one 0.055-0.068).
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
// Python client's SessionPool does.
//
// Files: main.go (the worker's protocol and the closed loops), conn.go (a connection, its
// frames and sessions), ops.go (the operations and their retries), sample.go (the
// linearizability sample), histogram.go, cbor.go.
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"sync"
	"syscall"
	"time"
	"unsafe"
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
		for _, i := range cmd.Sample.Clients {
			// As the Python readers: another connection than the key's writer's.
			reader := conns[(position[i]+1)%len(conns)]
			wg.Add(1)
			go func(key string) {
				defer wg.Done()
				smp.read(reader, key, stop)
			}(keys[i])
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
