package main

import (
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

func openConnections(addr string, count int) ([]*conn, error) {
	pool := make([]*conn, 0, count)
	for i := 0; i < count; i++ {
		c, err := dial(addr)
		if err != nil {
			closeAll(pool)
			return nil, err
		}
		pool = append(pool, c)
	}
	return pool, nil
}

func closeAll(pool []*conn) {
	for _, c := range pool {
		c.close()
	}
}

// onEach runs work on every connection of pool at once and returns the first error any of
// them ended with.
func onEach(pool []*conn, work func(i int, c *conn) error) error {
	errs := make([]error, len(pool))
	var wg sync.WaitGroup
	for i, c := range pool {
		wg.Add(1)
		go func(i int, c *conn) {
			defer wg.Done()
			errs[i] = work(i, c)
		}(i, c)
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// publishThroughput: spec.Connections publishers as fast as the server answers, for
// spec.WarmUpS and then spec.Seconds measured; events/s, latency and the CPU each side used.
func publishThroughput(spec *Spec) (map[string]any, error) {
	pool, err := openConnections(spec.Addr, spec.Connections)
	if err != nil {
		return nil, err
	}
	defer closeAll(pool)
	var next, failures atomic.Int64
	measureFrom := time.Now().Add(time.Duration(spec.WarmUpS * float64(time.Second)))
	until := measureFrom.Add(time.Duration(spec.Seconds * float64(time.Second)))
	var measured phase
	var started sync.WaitGroup
	started.Add(1)
	time.AfterFunc(time.Until(measureFrom), func() {
		measured = startPhase(spec.ServerPids)
		started.Done()
	})
	latencies := make([][]float64, len(pool))
	err = onEach(pool, func(i int, c *conn) error {
		p := publisher{spec: spec}
		for {
			begun := time.Now()
			if !begun.Before(until) {
				return nil
			}
			status, _, err := c.roundTrip(p.event(int(next.Add(1) - 1)))
			if err != nil {
				return err
			}
			if status >= 300 {
				failures.Add(1)
			} else if !begun.Before(measureFrom) {
				latencies[i] = append(latencies[i], float64(time.Since(begun))/1e6)
			}
		}
	})
	started.Wait()
	seconds, generator, server := measured.end()
	ownSeconds := generator * seconds
	if err != nil {
		return nil, fmt.Errorf("publishing: %w", err)
	}
	var all []float64
	for _, l := range latencies {
		all = append(all, l...)
	}
	done := float64(len(all))
	result := map[string]any{
		"events_per_s":            round(done/seconds, 0),
		"failures":                failures.Load(),
		"server_cpu_us_per_event": round(server*1e6/maxf(done, 1), 1),
		"generator_cpu":           round(generator, 2),
		// What the ceiling would be on a core of its own, whatever else shares the machine.
		"generator_cpu_us_per_event": round(ownSeconds*1e6/maxf(done, 1), 1),
	}
	for k, v := range summary(all) {
		result[k] = v
	}
	return result, nil
}

func maxf(a, b float64) float64 {
	if a > b {
		return a
	}
	return b
}

// pacedPublishing publishes rate events/s in total, over connections, for seconds; it returns
// how many were acknowledged. A server that cannot take the rate gets fewer events:
// publishing stops at `seconds`, so a saturated server's backlog (and the run) stays bounded.
func pacedPublishing(spec *Spec, connections int) (int, error) {
	total := int(spec.Rate * spec.Seconds)
	pool, err := openConnections(spec.Addr, connections)
	if err != nil {
		return 0, err
	}
	defer closeAll(pool)
	var acknowledged atomic.Int64
	started := time.Now()
	until := started.Add(time.Duration(spec.Seconds * float64(time.Second)))
	err = onEach(pool, func(i int, c *conn) error {
		p := publisher{spec: spec}
		for n := i; n < total; n += connections {
			due := started.Add(time.Duration(float64(n) / spec.Rate * float64(time.Second)))
			if wait := time.Until(due); wait > 0 {
				time.Sleep(wait)
			} else if !time.Now().Before(until) {
				return nil
			}
			status, _, err := c.roundTrip(p.event(n))
			if err != nil {
				return err
			}
			if status < 300 {
				acknowledged.Add(1)
			}
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("paced publishing: %w", err)
	}
	return int(acknowledged.Load()), nil
}

// publishNumbered publishes events 0..events-1 as fast as the server takes them, every one
// acknowledged.
func publishNumbered(spec *Spec, events, connections int) error {
	pool, err := openConnections(spec.Addr, connections)
	if err != nil {
		return err
	}
	defer closeAll(pool)
	err = onEach(pool, func(i int, c *conn) error {
		p := publisher{spec: spec}
		for n := i; n < events; n += connections {
			status, body, err := c.roundTrip(p.event(n))
			if err == nil && status >= 300 {
				err = fmt.Errorf("answered %d: %.200s", status, body)
			}
			if err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("publishing for replay: %w", err)
	}
	return nil
}
