package main

import (
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

const (
	openingAtOnce = 100 // connections being opened at once: quick, and within any backlog
	readyTimeout  = 60 * time.Second
)

// received is what one subscriber got: each event number at most once in seen, the rest
// counted as duplicates, and a latency per delivery.
type received struct {
	seen       []bool
	unique     int
	duplicates int
	latencies  []float64
}

func (r *received) add(frames []byte, total *atomic.Int64) {
	arrived := nowMs()
	scan(frames, func(n int, sentAtMs float64) {
		r.latencies = append(r.latencies, arrived-sentAtMs)
		if n < 0 || n >= len(r.seen) {
			return
		}
		if r.seen[n] {
			r.duplicates++
			return
		}
		r.seen[n] = true
		r.unique++
		total.Add(1)
	})
}

// subscribers are many SSE streams (read by one epoll thread) or Bayeux sessions (each
// polling in a goroutine of its own) on one channel.
type subscribers struct {
	streams  *streams
	stop     atomic.Bool
	mu       sync.Mutex
	conns    []*conn
	failures atomic.Int64
	done     sync.WaitGroup
}

// open starts count subscribers, each handing what it receives to each(index, bytes) (on one
// thread for SSE, on the subscriber's own goroutine for Bayeux); it returns when all are open,
// or on the first that cannot be.
func (s *subscribers) open(spec *Spec, bayeux bool, count int, each func(int, []byte)) error {
	if !bayeux {
		var err error
		if s.streams, err = newStreams(); err != nil {
			return err
		}
	}
	ready := make(chan error, count)
	slots := make(chan struct{}, openingAtOnce)
	for i := 0; i < count; i++ {
		slots <- struct{}{}
		if !bayeux {
			go func(i int) {
				err := s.streams.add(spec.Addr, []byte(spec.SSERequest), func(frames []byte) { each(i, frames) })
				<-slots
				ready <- err
			}(i)
			continue
		}
		s.done.Add(1)
		go func(i int) {
			defer s.done.Done()
			session, err := openBayeux(spec, &s.stop)
			<-slots
			if err == nil {
				s.mu.Lock()
				s.conns = append(s.conns, session.c)
				s.mu.Unlock()
			}
			ready <- err
			if err == nil {
				if err = session.poll(func(body []byte) { each(i, body) }); err != nil {
					s.failures.Add(1)
				}
			}
		}(i)
	}
	deadline := time.After(readyTimeout)
	for i := 0; i < count; i++ {
		select {
		case err := <-ready:
			if err != nil {
				s.close()
				return fmt.Errorf("a subscriber could not start: %w", err)
			}
		case <-deadline:
			s.close()
			return fmt.Errorf("%d of %d subscribers open after %s", i, count, readyTimeout)
		}
	}
	return nil
}

// failed is how many subscribers the server dropped while they were meant to be held.
func (s *subscribers) failed() int64 {
	if s.streams != nil {
		return s.streams.failures.Load()
	}
	return s.failures.Load()
}

// close ends every subscriber and waits for them.
func (s *subscribers) close() {
	s.stop.Store(true)
	if s.streams != nil {
		s.streams.close()
	}
	s.mu.Lock()
	closeAll(s.conns)
	s.mu.Unlock()
	s.done.Wait()
}

// fanout: spec.Subscribers on one channel, spec.Rate events/s published in total for
// spec.Seconds; delivery latency, events not delivered by the end of spec.SettleS (lost, or
// still queued on a server that fell behind) and duplicates.
func fanout(spec *Spec, bayeux bool) (map[string]any, error) {
	total := int(spec.Rate * spec.Seconds)
	got := make([]received, spec.Subscribers)
	for i := range got {
		got[i].seen = make([]bool, total)
	}
	var delivered atomic.Int64
	var group subscribers
	err := group.open(spec, bayeux, spec.Subscribers, func(i int, frames []byte) {
		got[i].add(frames, &delivered)
	})
	if err != nil {
		return nil, err
	}
	measured := startPhase(spec.ServerPids)
	published, err := pacedPublishing(spec, 4)
	publishing := time.Since(measured.started).Seconds()
	if err != nil {
		group.close()
		return nil, err
	}
	expected := int64(published * spec.Subscribers)
	deadline := time.Now().Add(time.Duration(spec.SettleS * float64(time.Second)))
	for delivered.Load() < expected && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond) // waiting for stragglers, bounded by the settle time
	}
	seconds, generator, server := measured.end()
	group.close()
	unique, duplicates := 0, 0
	var latencies []float64
	for i := range got {
		unique += got[i].unique
		duplicates += got[i].duplicates
		latencies = append(latencies, got[i].latencies...)
		got[i].latencies = nil
	}
	loss := 0.0
	if expected > 0 {
		loss = round(100*(1-float64(unique)/float64(expected)), 3)
	}
	result := map[string]any{
		"published":       published,
		"published_per_s": round(float64(published)/maxf(publishing, 1e-9), 0),
		"delivered":       unique,
		// Over the whole time until the last delivery (or the end of the settle time): what
		// the subscribers actually received per second, not what was asked of the server.
		"delivered_per_s":            round(float64(unique)/maxf(seconds, 1e-9), 0),
		"loss_pct":                   loss,
		"duplicates":                 duplicates,
		"subscriber_failures":        group.failed(),
		"server_cpu_us_per_delivery": round(server*1e6/maxf(float64(unique), 1), 1),
		"generator_cpu":              round(generator, 2),
		"generator_cpu_us_per_delivery": round(
			generator*seconds*1e6/maxf(float64(unique), 1), 1),
	}
	if bayeux {
		result["bayeux_connects"] = bayeuxConnects.Load()
		result["bayeux_retried"] = bayeuxRetried.Load()
	}
	for k, v := range summary(latencies) {
		result[k] = v
	}
	return result, nil
}
