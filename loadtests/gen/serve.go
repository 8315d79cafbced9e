package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
)

var (
	answer = []byte("HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}")
	opened = []byte("HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n\r\n")
)

// nothing is a server that does nothing but answer: every POST gets a fixed 201 and its body is
// sent as one Server-Sent Event to every open GET. Publishing and fanning out against it
// measure the generator's own ceiling.
type nothing struct {
	mu      sync.Mutex
	streams map[net.Conn]struct{}
}

func serveNothing() error {
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	fmt.Printf("listening on http://%s\n", listener.Addr())
	server := &nothing{streams: map[net.Conn]struct{}{}}
	for {
		c, err := listener.Accept()
		if err != nil {
			return err
		}
		go server.handle(c)
	}
}

func (s *nothing) handle(c net.Conn) {
	defer c.Close()
	in := bufio.NewReaderSize(c, 64<<10)
	for {
		get, length, err := requestHead(in)
		if err != nil {
			return
		}
		if get {
			s.mu.Lock()
			s.streams[c] = struct{}{}
			s.mu.Unlock()
			_, err = c.Write(opened)
			if err == nil {
				_, err = io.Copy(io.Discard, in)
			}
			s.mu.Lock()
			delete(s.streams, c)
			s.mu.Unlock()
			return
		}
		frame := make([]byte, 6+length+2)
		copy(frame, "data: ")
		if _, err = io.ReadFull(in, frame[6:6+length]); err != nil {
			return
		}
		copy(frame[6+length:], "\n\n")
		if _, err = c.Write(answer); err != nil {
			return
		}
		s.mu.Lock()
		for stream := range s.streams {
			_, _ = stream.Write(frame)
		}
		s.mu.Unlock()
	}
}

// requestHead reads a request's head: whether it is a GET, and its Content-Length.
func requestHead(in *bufio.Reader) (get bool, length int, err error) {
	line, err := in.ReadSlice('\n')
	if err != nil {
		return false, 0, err
	}
	get = bytes.HasPrefix(line, []byte("GET "))
	for {
		line, err = in.ReadSlice('\n')
		if err != nil {
			return false, 0, err
		}
		line = bytes.TrimRight(line, "\r\n")
		if len(line) == 0 {
			return get, length, nil
		}
		if colon := bytes.IndexByte(line, ':'); colon >= 0 && bytes.EqualFold(line[:colon], []byte("content-length")) {
			if length, err = strconv.Atoi(string(bytes.TrimSpace(line[colon+1:]))); err != nil {
				return false, 0, err
			}
		}
	}
}
