package main

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// Counted over every session: connects made, and 503s retried.
var bayeuxConnects, bayeuxRetried atomic.Int64

const (
	bayeuxRetries    = 20
	bayeuxRetryPause = 500 * time.Millisecond
)

// bayeuxSession is one long-polling client on one keep-alive connection: handshake,
// subscribe, then held connects. A 503 is retried as CometD clients do: after a pause, with
// the same clientId, a bounded number of times.
type bayeuxSession struct {
	c       *conn
	spec    *BayeuxSpec
	connect []byte
	stop    *atomic.Bool
}

func (s *bayeuxSession) request(body string) []byte {
	return []byte(s.spec.Head + "Content-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + body)
}

// post sends one prepared request; the answer's body is valid until the next post.
func (s *bayeuxSession) post(request []byte) ([]byte, error) {
	for attempt := 0; ; attempt++ {
		status, body, err := s.c.roundTrip(request)
		if err != nil {
			return nil, err
		}
		if status == 200 {
			return body, nil
		}
		if status != 503 || attempt+1 >= bayeuxRetries || s.stop.Load() {
			return nil, fmt.Errorf("Bayeux answered %d: %.200s", status, body)
		}
		bayeuxRetried.Add(1)
		time.Sleep(bayeuxRetryPause)
	}
}

type bayeuxReply struct {
	Successful bool   `json:"successful"`
	ClientID   string `json:"clientId"`
	Error      string `json:"error"`
}

func (s *bayeuxSession) meta(body, what string) (bayeuxReply, error) {
	raw, err := s.post(s.request(body))
	if err != nil {
		return bayeuxReply{}, fmt.Errorf("%s: %w", what, err)
	}
	var replies []bayeuxReply
	if err = json.Unmarshal(raw, &replies); err != nil || len(replies) == 0 {
		return bayeuxReply{}, fmt.Errorf("%s: unreadable reply %.200s", what, raw)
	}
	if !replies[0].Successful {
		return bayeuxReply{}, fmt.Errorf("%s refused: %.200s", what, raw)
	}
	return replies[0], nil
}

func openBayeux(spec *Spec, stop *atomic.Bool) (*bayeuxSession, error) {
	c, err := dialSized(spec.Addr, 4<<10)
	if err != nil {
		return nil, err
	}
	s := &bayeuxSession{c: c, spec: spec.Bayeux, stop: stop}
	reply, err := s.meta(spec.Bayeux.Handshake, "handshake")
	if err == nil {
		_, err = s.meta(strings.ReplaceAll(spec.Bayeux.Subscribe, "%CLIENT%", reply.ClientID), "subscribe")
	}
	if err != nil {
		c.close()
		return nil, err
	}
	s.connect = s.request(strings.ReplaceAll(spec.Bayeux.Connect, "%CLIENT%", reply.ClientID))
	return s, nil
}

// poll makes held connects until the connection closes or one fails, handing each reply's body
// to each.
func (s *bayeuxSession) poll(each func([]byte)) error {
	for !s.stop.Load() {
		bayeuxConnects.Add(1)
		body, err := s.post(s.connect)
		if err != nil {
			if s.stop.Load() {
				return nil
			}
			return err
		}
		each(body)
	}
	return nil
}
