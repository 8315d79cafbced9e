// Command gen is the benchmark's load generator: it publishes, subscribes over SSE and Bayeux
// long-polling, replays and holds idle connections against any server described to it, and
// serves the do-nothing server its own ceiling is measured against.
//
// Usage: gen <mode> < spec.json, where mode is publish, fanout-sse, fanout-bayeux, replay, idle
// or serve-nothing (which needs no spec). The spec (see Spec) carries the prepared requests:
// the Python side knows how each server is driven. The result is one JSON object on stdout;
// a failure is a message on stderr and exit status 1.
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"runtime/pprof"
)

// Spec is what the Python side sends on stdin. Requests are raw HTTP/1.1: a head is the
// request line and header lines, each ending in CRLF, without Content-Length or the blank line.
type Spec struct {
	Addr string `json:"addr"` // host:port of the server

	// Publishing: head, then Content-Length, then Prefix + payload + Suffix, where the payload
	// is {"n":<n>,"sentAt":<ms>,"text":"x"*100}.
	PublishHead string `json:"publish_head"`
	Prefix      string `json:"prefix"`
	Suffix      string `json:"suffix"`

	ServerPids []int `json:"server_pids"` // whose CPU time is summed per event or delivery

	Connections int     `json:"connections"`
	WarmUpS     float64 `json:"warm_up_s"`
	Seconds     float64 `json:"seconds"`

	// SSE: the whole GET for new events, and for everything retained (replay).
	SSERequest    string `json:"sse_request"`
	ReplayRequest string `json:"replay_request"`

	// Bayeux: the POST head and the bodies; "%CLIENT%" in Subscribe and Connect stands for the
	// clientId the handshake gave.
	Bayeux *BayeuxSpec `json:"bayeux"`

	Subscribers int     `json:"subscribers"`
	Rate        float64 `json:"rate"`
	SettleS     float64 `json:"settle_s"`
	Events      int     `json:"events"`
	Count       int     `json:"count"`
	Transport   string  `json:"transport"` // idle: sse or bayeux
}

// BayeuxSpec is one long-polling client's messages.
type BayeuxSpec struct {
	Head      string `json:"head"`
	Handshake string `json:"handshake"`
	Subscribe string `json:"subscribe"`
	Connect   string `json:"connect"`
}

func fail(format string, arguments ...any) {
	fmt.Fprintf(os.Stderr, "gen: "+format+"\n", arguments...)
	os.Exit(1)
}

func main() {
	if len(os.Args) != 2 {
		fail("usage: gen publish|fanout-sse|fanout-bayeux|replay|idle|serve-nothing < spec.json")
	}
	mode := os.Args[1]
	if mode == "serve-nothing" {
		if err := serveNothing(); err != nil {
			fail("%v", err)
		}
		return
	}
	if path := os.Getenv("GEN_CPUPROFILE"); path != "" {
		// for looking into the generator itself: go tool pprof gen <path>
		if out, err := os.Create(path); err == nil && pprof.StartCPUProfile(out) == nil {
			defer pprof.StopCPUProfile()
		}
	}
	spec := Spec{Connections: 32, WarmUpS: 1, Seconds: 5, SettleS: 5, Subscribers: 100, Rate: 100}
	decoder := json.NewDecoder(os.Stdin)
	if err := decoder.Decode(&spec); err != nil {
		fail("reading the spec: %v", err)
	}
	var result any
	var err error
	switch mode {
	case "publish":
		result, err = publishThroughput(&spec)
	case "fanout-sse", "fanout-bayeux":
		result, err = fanout(&spec, mode == "fanout-bayeux")
	case "replay":
		result, err = replayCatchUp(&spec)
	case "idle":
		result, err = idle(&spec, decoder)
	default:
		fail("unknown mode %q", mode)
	}
	if err != nil {
		fail("%s: %v", mode, err)
	}
	out, err := json.Marshal(result)
	if err != nil {
		fail("encoding the result: %v", err)
	}
	fmt.Println(string(out))
}
