// The bench's operations with the Python client's retries (univrs/client/client.py _call).
package main

import (
	"sync/atomic"
	"time"
)

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
