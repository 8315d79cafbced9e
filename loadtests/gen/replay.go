package main

import (
	"fmt"
	"time"
)

const replayTimeout = 120 * time.Second

// replayCatchUp publishes spec.Events (retained, every one acknowledged), then times one new
// SSE subscriber reading them all from the oldest retained.
func replayCatchUp(spec *Spec) (map[string]any, error) {
	if err := publishNumbered(spec, spec.Events, 16); err != nil {
		return nil, err
	}
	measured := startPhase(spec.ServerPids)
	c, err := dial(spec.Addr)
	if err != nil {
		return nil, err
	}
	defer c.close()
	status, err := c.openStream([]byte(spec.ReplayRequest))
	if err != nil {
		return nil, err
	}
	if status != 200 {
		return nil, fmt.Errorf("replay refused with %d", status)
	}
	timer := time.AfterFunc(replayTimeout, c.close)
	defer timer.Stop()
	seen := 0
	var finished time.Time
	err = c.frames(func(frames []byte) {
		seen += count(frames)
		if seen >= spec.Events && finished.IsZero() {
			finished = time.Now()
			c.close()
		}
	})
	seconds, generator, _ := measured.end()
	if !finished.IsZero() {
		seconds = finished.Sub(measured.started).Seconds()
	}
	if seen < spec.Events {
		return nil, fmt.Errorf("the replay ended after %d of %d events (%v)", seen, spec.Events, err)
	}
	return map[string]any{
		"events":        seen,
		"events_per_s":  round(float64(seen)/seconds, 0),
		"seconds":       round(seconds, 3),
		"generator_cpu": round(generator, 2),
	}, nil
}
