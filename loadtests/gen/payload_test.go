package main

import (
	"strconv"
	"strings"
	"testing"
)

func found(data string) [][2]float64 {
	var all [][2]float64
	scan([]byte(data), func(n int, sentAtMs float64) { all = append(all, [2]float64{float64(n), sentAtMs}) })
	return all
}

func TestScanFindsEachPayloadWhateverWrapsIt(t *testing.T) {
	sse := "data: {\"n\":7,\"sentAt\":1733255597123.456,\"text\":\"x\"}\r\n\r\n" +
		"id: 9\ndata: {\"n\":8,\"sentAt\":1.5e3,\"text\":\"x\"}\n\n"
	bayeux := `[{"channel":"/event/A__e","data":{"payload":{"n":12,"sentAt":42.25,"text":"x"}}},` +
		`{"channel":"/meta/connect","successful":true}]`
	for data, want := range map[string][][2]float64{
		sse:    {{7, 1733255597123.456}, {8, 1500}},
		bayeux: {{12, 42.25}},
	} {
		got := found(data)
		if len(got) != len(want) {
			t.Fatalf("%q: found %v, want %v", data, got, want)
		}
		for i := range want {
			if got[i] != want[i] {
				t.Fatalf("%q: found %v, want %v", data, got, want)
			}
		}
	}
}

func TestScanSkipsWhatIsNotAPayload(t *testing.T) {
	for _, data := range []string{`{"n":x,"sentAt":1}`, `{"n":3,"text":"x"}`, `{"n":4,"sentAt":}`, ""} {
		if got := found(data); len(got) != 0 {
			t.Fatalf("%q: found %v", data, got)
		}
	}
	if got := found(strings.Repeat(`{"n":1,"sentAt":2}`, 3)); len(got) != 3 {
		t.Fatalf("found %v, want 3", got)
	}
}

func TestPublishedEventIsFoundByScan(t *testing.T) {
	p := publisher{spec: &Spec{PublishHead: "POST /x HTTP/1.1\r\nHost: h\r\n", Prefix: `[{"data":`, Suffix: "}]"}}
	request := string(p.event(31))
	head, body, ok := strings.Cut(request, "\r\n\r\n")
	if !ok || !strings.Contains(head, "Content-Length: "+strconv.Itoa(len(body))) {
		t.Fatalf("bad request %q", request)
	}
	got := found(body)
	if len(got) != 1 || got[0][0] != 31 || got[0][1] <= 0 {
		t.Fatalf("found %v in %q", got, body)
	}
}
