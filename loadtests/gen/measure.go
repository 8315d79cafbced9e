package main

import (
	"math"
	"os"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// clockTicks is Linux's USER_HZ, the unit of /proc/<pid>/stat times (100 on every Linux ABI
// Go runs on; the standard library has no sysconf).
const clockTicks = 100

// serverCPU is the CPU time (user + system, seconds) the processes have used so far.
func serverCPU(pids []int) float64 {
	total := 0.0
	for _, pid := range pids {
		raw, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
		if err != nil {
			continue // a process that has gone used nothing more
		}
		text := string(raw)
		fields := strings.Fields(text[strings.LastIndexByte(text, ')')+1:])
		user, _ := strconv.ParseFloat(fields[11], 64)
		system, _ := strconv.ParseFloat(fields[12], 64)
		total += (user + system) / clockTicks
	}
	return total
}

// ownCPU is the CPU time this process has used so far, in seconds.
func ownCPU() float64 {
	var usage syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &usage); err != nil {
		return math.NaN()
	}
	return time.Duration(usage.Utime.Nano() + usage.Stime.Nano()).Seconds()
}

// phase measures a stretch of time: wall clock, this generator's CPU and the servers'.
type phase struct {
	pids      []int
	started   time.Time
	ownCPU    float64
	serverCPU float64
}

func startPhase(pids []int) phase {
	return phase{pids, time.Now(), ownCPU(), serverCPU(pids)}
}

// end returns the phase's seconds, the generator's CPU as a fraction of one core and the
// servers' CPU seconds.
func (p phase) end() (seconds, generator, server float64) {
	seconds = time.Since(p.started).Seconds()
	generator = (ownCPU() - p.ownCPU) / math.Max(seconds, 1e-9)
	return seconds, generator, serverCPU(p.pids) - p.serverCPU
}

func round(value float64, places int) float64 {
	scale := math.Pow(10, float64(places))
	return math.Round(value*scale) / scale
}

// summary is p50/p99/max of milliseconds (null when there are none).
func summary(values []float64) map[string]any {
	if len(values) == 0 {
		return map[string]any{"p50_ms": nil, "p99_ms": nil, "max_ms": nil}
	}
	sort.Float64s(values)
	at := func(fraction float64) float64 {
		return round(values[int(math.Round(fraction*float64(len(values)-1)))], 3)
	}
	return map[string]any{"p50_ms": at(0.50), "p99_ms": at(0.99), "max_ms": at(1)}
}
