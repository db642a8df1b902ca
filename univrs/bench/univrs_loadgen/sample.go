// The linearizability sample, run here beside the load (univrs/bench/sample.py).
package main

import (
	"sync"
	"time"
)

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
	keys     map[string]bool // the sampled keys (never changed: read without mu)
	ops      map[string]int
	done     map[string]bool
	base     float64 // CLOCK_MONOTONIC at t0
	t0       time.Time
	nextProc int64
}

func newSampler(spec *sampleSpec, keys []string) *sampler {
	smp := &sampler{spec: spec, keys: map[string]bool{}, ops: map[string]int{},
		done: map[string]bool{}, nextProc: spec.NextProcess, t0: time.Now()}
	smp.base = monotonic()
	for _, i := range spec.Clients {
		smp.keys[keys[i]] = true
		smp.ops[keys[i]] = 0
	}
	return smp
}

func (smp *sampler) sampled(key string) bool {
	return smp.keys[key]
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
	// Copies: after a stall, loops still running may go on recording while this is encoded.
	values := map[string]int64{}
	for key, value := range smp.spec.Values {
		values[key] = value
	}
	return map[string]any{"events": append([][6]any(nil), smp.events...), "values": values,
		"next_process": smp.nextProc}
}

// plan is univrs/bench/workers.py connection_plan: per connection the node it is pinned to
// ("" follows the leader).
