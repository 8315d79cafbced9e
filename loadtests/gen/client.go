package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"time"
)

// conn is one keep-alive HTTP/1.1 connection that writes prepared requests and reads exactly
// what each answer announces (Content-Length or chunked).
type conn struct {
	net  net.Conn
	in   *bufio.Reader
	body []byte // reused for each answer's body
}

func dial(addr string) (*conn, error) { return dialSized(addr, 64<<10) }

// dialSized reads through a buffer of size bytes (small for the thousands of idle sessions).
func dialSized(addr string, size int) (*conn, error) {
	c, err := net.DialTimeout("tcp", addr, 30*time.Second)
	if err != nil {
		return nil, err
	}
	return &conn{net: c, in: bufio.NewReaderSize(c, size)}, nil
}

func (c *conn) close() { c.net.Close() }

// head reads a status line and headers: the status, the Content-Length (-1 if none) and
// whether the body is chunked.
func (c *conn) head() (status int, length int, chunked bool, err error) {
	line, err := c.in.ReadSlice('\n')
	if err != nil {
		return 0, 0, false, err
	}
	fields := bytes.SplitN(line, []byte(" "), 3)
	if len(fields) < 2 {
		return 0, 0, false, fmt.Errorf("bad status line %q", line)
	}
	if status, err = strconv.Atoi(string(bytes.TrimSpace(fields[1]))); err != nil {
		return 0, 0, false, fmt.Errorf("bad status line %q", line)
	}
	length = -1
	for {
		line, err = c.in.ReadSlice('\n')
		if err != nil {
			return 0, 0, false, err
		}
		line = bytes.TrimRight(line, "\r\n")
		if len(line) == 0 {
			return status, length, chunked, nil
		}
		colon := bytes.IndexByte(line, ':')
		if colon < 0 {
			continue
		}
		name, value := line[:colon], bytes.TrimSpace(line[colon+1:])
		switch {
		case bytes.EqualFold(name, []byte("content-length")):
			if length, err = strconv.Atoi(string(value)); err != nil {
				return 0, 0, false, fmt.Errorf("bad Content-Length %q", value)
			}
		case bytes.EqualFold(name, []byte("transfer-encoding")):
			chunked = bytes.EqualFold(value, []byte("chunked"))
		}
	}
}

// roundTrip sends one prepared request and reads its whole answer; the body is valid until the
// next call.
func (c *conn) roundTrip(request []byte) (int, []byte, error) {
	if _, err := c.net.Write(request); err != nil {
		return 0, nil, err
	}
	status, length, chunked, err := c.head()
	if err != nil {
		return 0, nil, err
	}
	c.body = c.body[:0]
	switch {
	case length >= 0:
		if cap(c.body) < length {
			c.body = make([]byte, length)
		}
		c.body = c.body[:length]
		_, err = io.ReadFull(c.in, c.body)
	case chunked:
		err = c.chunked()
	}
	return status, c.body, err
}

func (c *conn) chunked() error {
	for {
		line, err := c.in.ReadSlice('\n')
		if err != nil {
			return err
		}
		line = bytes.TrimRight(line, "\r\n")
		if semicolon := bytes.IndexByte(line, ';'); semicolon >= 0 {
			line = line[:semicolon]
		}
		size, err := strconv.ParseInt(string(line), 16, 64)
		if err != nil {
			return fmt.Errorf("bad chunk size %q", line)
		}
		if size == 0 {
			_, err = c.in.ReadSlice('\n')
			return err
		}
		start := len(c.body)
		c.body = append(c.body, make([]byte, size)...)
		if _, err = io.ReadFull(c.in, c.body[start:]); err != nil {
			return err
		}
		if _, err = c.in.Discard(2); err != nil {
			return err
		}
	}
}

// openStream sends a request whose answer is an open-ended stream and returns its status; the
// stream's bytes are then read from c.in.
func (c *conn) openStream(request []byte) (int, error) {
	if _, err := c.net.Write(request); err != nil {
		return 0, err
	}
	status, _, _, err := c.head()
	return status, err
}

// frames reads a stream until it ends, handing everything up to the last complete line to
// each at once, chunked-encoding size lines included: the measurements only look for the
// payload's own fields (see scan), and an event's data line is whole once its line ends
// (whether the server ends lines with LF or CRLF).
func (c *conn) frames(each func([]byte)) error {
	buffer := make([]byte, 0, 64<<10)
	read := make([]byte, 64<<10)
	for {
		n, err := c.in.Read(read)
		if n > 0 {
			buffer = append(buffer, read[:n]...)
			if cut := bytes.LastIndexByte(buffer, '\n'); cut >= 0 {
				each(buffer[:cut+1])
				rest := copy(buffer, buffer[cut+1:])
				buffer = buffer[:rest]
			}
		}
		if err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) {
				return nil
			}
			return err
		}
	}
}
