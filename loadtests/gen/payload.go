package main

import (
	"bytes"
	"strconv"
	"time"
)

var text = bytes.Repeat([]byte("x"), 100)

func nowMs() float64 { return float64(time.Now().UnixNano()) / 1e6 }

// publisher prepares publish requests for event numbers on one connection.
type publisher struct {
	spec    *Spec
	request []byte
	payload []byte
}

// event is the whole request publishing event n, stamped now: the payload
// {"n":n,"sentAt":<ms>,"text":"x"*100} between the spec's prefix and suffix.
func (p *publisher) event(n int) []byte {
	p.payload = append(p.payload[:0], `{"n":`...)
	p.payload = strconv.AppendInt(p.payload, int64(n), 10)
	p.payload = append(p.payload, `,"sentAt":`...)
	p.payload = strconv.AppendFloat(p.payload, nowMs(), 'f', 3, 64)
	p.payload = append(p.payload, `,"text":"`...)
	p.payload = append(p.payload, text...)
	p.payload = append(p.payload, `"}`...)
	length := len(p.spec.Prefix) + len(p.payload) + len(p.spec.Suffix)
	p.request = append(p.request[:0], p.spec.PublishHead...)
	p.request = append(p.request, "Content-Length: "...)
	p.request = strconv.AppendInt(p.request, int64(length), 10)
	p.request = append(p.request, "\r\n\r\n"...)
	p.request = append(p.request, p.spec.Prefix...)
	p.request = append(p.request, p.payload...)
	p.request = append(p.request, p.spec.Suffix...)
	return p.request
}

var marker = []byte(`"n":`)
var sentAt = []byte(`,"sentAt":`)

// scan calls found for each `"n":<int>,"sentAt":<float>` in data, whatever wraps it (an SSE
// frame, an envelope, a Bayeux message), without decoding anything else.
func scan(data []byte, found func(n int, sentAtMs float64)) {
	for {
		at := bytes.Index(data, marker)
		if at < 0 {
			return
		}
		data = data[at+len(marker):]
		digits := 0
		for digits < len(data) && data[digits] >= '0' && data[digits] <= '9' {
			digits++
		}
		if digits == 0 || !bytes.HasPrefix(data[digits:], sentAt) {
			continue
		}
		n, err := strconv.Atoi(string(data[:digits]))
		if err != nil {
			continue
		}
		data = data[digits+len(sentAt):]
		end := 0
		for end < len(data) && bytes.IndexByte([]byte("0123456789.eE+-"), data[end]) >= 0 {
			end++
		}
		stamp, err := strconv.ParseFloat(string(data[:end]), 64)
		if err != nil {
			continue
		}
		data = data[end:]
		found(n, stamp)
	}
}

// count is how many payloads data holds.
func count(data []byte) int {
	total := 0
	scan(data, func(int, float64) { total++ })
	return total
}
