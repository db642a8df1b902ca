// etcd_loadgen: the closed-loop load of scripts/bench, against etcd, with etcd's own Go client.
//
// Used by `scripts/bench --compare-etcd` (univrs/bench/etcd.py), which builds it with the
// Debian packages golang-go and golang-etcd-server-dev (GOPATH mode, no download) and runs it
// against a local 3-member etcd cluster. `clients` goroutines, spread over `conns` client
// connections, each put (or linearizable get) its own key in a closed loop: after `warmup`
// seconds the program prints "start" on one line (the caller samples CPU counters then), and
// after `duration` more seconds one JSON object: ops, ops_per_s, p50_ms, p99_ms, max_ms,
// errors, first_error.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/clientv3"
)

func main() {
	endpoints := flag.String("endpoints", "127.0.0.1:2379", "comma-separated client URLs")
	clients := flag.Int("clients", 64, "concurrent closed-loop clients")
	conns := flag.Int("conns", 4, "client connections")
	duration := flag.Float64("duration", 5, "measured seconds")
	warmup := flag.Float64("warmup", 1, "seconds before measuring")
	op := flag.String("op", "put", "put or get (linearizable)")
	valueSize := flag.Int("value-size", 100, "bytes per put value")
	flag.Parse()

	var cs []*clientv3.Client
	for i := 0; i < *conns; i++ {
		c, err := clientv3.New(clientv3.Config{
			Endpoints:   strings.Split(*endpoints, ","),
			DialTimeout: 10 * time.Second,
		})
		if err != nil {
			fmt.Fprintln(os.Stderr, "connect:", err)
			os.Exit(2)
		}
		defer c.Close()
		cs = append(cs, c)
	}
	value := strings.Repeat("v", *valueSize)
	// Create every key first, so that gets read something.
	for i := 0; i < *clients; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		_, err := cs[i%len(cs)].Put(ctx, fmt.Sprintf("bench-%d", i), value)
		cancel()
		if err != nil {
			fmt.Fprintln(os.Stderr, "setup put:", err)
			os.Exit(2)
		}
	}

	begin := time.Now()
	start := begin.Add(time.Duration(*warmup * float64(time.Second)))
	stop := start.Add(time.Duration(*duration * float64(time.Second)))
	lat := make([][]float64, *clients)
	errs := make([]int, *clients)
	firstErr := make([]string, *clients)
	var wg sync.WaitGroup
	for i := 0; i < *clients; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			c := cs[i%len(cs)]
			key := fmt.Sprintf("bench-%d", i)
			for {
				t0 := time.Now()
				if !t0.Before(stop) {
					return
				}
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				var err error
				if *op == "get" {
					_, err = c.Get(ctx, key)
				} else {
					_, err = c.Put(ctx, key, value)
				}
				cancel()
				if err != nil {
					errs[i]++
					if firstErr[i] == "" {
						firstErr[i] = err.Error()
					}
					continue
				}
				if !t0.Before(start) {
					lat[i] = append(lat[i], time.Since(t0).Seconds()*1000)
				}
			}
		}(i)
	}
	time.Sleep(time.Until(start))
	fmt.Println("start")
	wg.Wait()

	var all []float64
	nerr := 0
	first := ""
	for i := range lat {
		all = append(all, lat[i]...)
		nerr += errs[i]
		if first == "" {
			first = firstErr[i]
		}
	}
	sort.Float64s(all)
	pct := func(q float64) float64 {
		if len(all) == 0 {
			return 0
		}
		j := int(q * float64(len(all)))
		if j >= len(all) {
			j = len(all) - 1
		}
		return all[j]
	}
	out := map[string]interface{}{
		"ops":         len(all),
		"ops_per_s":   float64(len(all)) / *duration,
		"p50_ms":      pct(0.50),
		"p99_ms":      pct(0.99),
		"max_ms":      pct(1.0),
		"errors":      nerr,
		"first_error": first,
	}
	b, _ := json.Marshal(out)
	fmt.Println(string(b))
}
