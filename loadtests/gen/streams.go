package main

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"
)

// streams reads many SSE streams on one thread with epoll: one read per readiness, for all
// streams at once, instead of a goroutine per stream whose every wake-up costs a scheduler
// switch and a second read. Its waits and reads are raw system calls, which keep the thread's
// scheduler slot (P) instead of handing it over and taking it back around each call: that
// hand-over, not the reads, was half the generator's CPU per delivered event. So the rest of
// the generator (publishers, timers) gets a second slot on the same core.
type streams struct {
	epoll    int
	mu       sync.Mutex
	open     map[int]*stream
	stop     atomic.Bool
	done     chan struct{}
	failures atomic.Int64
}

// stream is one SSE response being read: bytes after its last complete line wait in pending.
type stream struct {
	fd      int
	pending []byte
	each    func([]byte)
}

const (
	streamHeadLimit = 16 << 10
	// The longest a wait holds its slot: a garbage collection waits for it at most that long.
	waitMs = 2
)

func newStreams() (*streams, error) {
	epoll, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return nil, err
	}
	if runtime.GOMAXPROCS(0) < 2 {
		runtime.GOMAXPROCS(2)
	}
	s := &streams{epoll: epoll, open: map[int]*stream{}, done: make(chan struct{})}
	go s.loop()
	return s, nil
}

func sockaddr(addr string) (syscall.Sockaddr, error) {
	resolved, err := net.ResolveTCPAddr("tcp4", addr)
	if err != nil {
		return nil, err
	}
	found := &syscall.SockaddrInet4{Port: resolved.Port}
	copy(found.Addr[:], resolved.IP.To4())
	return found, nil
}

// add connects, sends request, reads the answer's head (blocking, at most 30 s) and, on a 200,
// hands every later run of complete lines to each on the reading thread.
func (s *streams) add(addr string, request []byte, each func([]byte)) error {
	to, err := sockaddr(addr)
	if err != nil {
		return err
	}
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	fail := func(err error) error {
		syscall.Close(fd)
		return err
	}
	timeout := syscall.NsecToTimeval(int64(30 * time.Second))
	_ = syscall.SetsockoptTimeval(fd, syscall.SOL_SOCKET, syscall.SO_RCVTIMEO, &timeout)
	_ = syscall.SetsockoptTimeval(fd, syscall.SOL_SOCKET, syscall.SO_SNDTIMEO, &timeout)
	if err = syscall.Connect(fd, to); err != nil {
		return fail(err)
	}
	for sent := 0; sent < len(request); {
		n, err := syscall.Write(fd, request[sent:])
		if err != nil {
			return fail(err)
		}
		sent += n
	}
	head := make([]byte, 0, 1024)
	chunk := make([]byte, 1024)
	end := -1
	for end < 0 {
		n, err := syscall.Read(fd, chunk)
		if err != nil || n <= 0 {
			return fail(fmt.Errorf("no answer to the stream request (%v)", err))
		}
		head = append(head, chunk[:n]...)
		if end = bytes.Index(head, []byte("\r\n\r\n")); end < 0 && len(head) > streamHeadLimit {
			return fail(errors.New("stream answer head too long"))
		}
	}
	fields := bytes.SplitN(head[:end], []byte(" "), 3)
	status := 0
	if len(fields) >= 2 {
		status, _ = strconv.Atoi(string(fields[1]))
	}
	if status != 200 {
		return fail(fmt.Errorf("stream refused with %d: %.200s", status, head))
	}
	if err = syscall.SetNonblock(fd, true); err != nil {
		return fail(err)
	}
	one := &stream{fd: fd, each: each, pending: append([]byte(nil), head[end+4:]...)}
	s.mu.Lock()
	s.open[fd] = one
	s.mu.Unlock()
	event := syscall.EpollEvent{Events: syscall.EPOLLIN | syscall.EPOLLRDHUP, Fd: int32(fd)}
	if err = syscall.EpollCtl(s.epoll, syscall.EPOLL_CTL_ADD, fd, &event); err != nil {
		s.mu.Lock()
		delete(s.open, fd)
		s.mu.Unlock()
		return fail(err)
	}
	return nil
}

func (s *streams) loop() {
	defer close(s.done)
	events := make([]syscall.EpollEvent, 256)
	buffer := make([]byte, 256<<10)
	for !s.stop.Load() {
		ready, err := epollWait(s.epoll, events, waitMs)
		if err != nil {
			if errors.Is(err, syscall.EINTR) {
				continue
			}
			return
		}
		for _, event := range events[:ready] {
			s.mu.Lock()
			one := s.open[int(event.Fd)]
			s.mu.Unlock()
			if one != nil {
				s.read(one, buffer)
			}
		}
	}
}

func (s *streams) read(one *stream, buffer []byte) {
	n, err := readRaw(one.fd, buffer)
	if n <= 0 {
		if errors.Is(err, syscall.EAGAIN) || errors.Is(err, syscall.EINTR) {
			return
		}
		if !s.stop.Load() {
			s.failures.Add(1) // the server ended a stream it should have held
		}
		s.mu.Lock()
		delete(s.open, one.fd)
		s.mu.Unlock()
		_ = syscall.EpollCtl(s.epoll, syscall.EPOLL_CTL_DEL, one.fd, nil)
		syscall.Close(one.fd)
		return
	}
	data := buffer[:n]
	cut := bytes.LastIndexByte(data, '\n') // complete lines go to each (see conn.frames)
	if cut < 0 {
		one.pending = append(one.pending, data...)
		return
	}
	if len(one.pending) > 0 {
		one.pending = append(one.pending, data[:cut+1]...)
		one.each(one.pending)
		one.pending = one.pending[:0]
	} else {
		one.each(data[:cut+1])
	}
	one.pending = append(one.pending, data[cut+1:]...)
}

// close stops reading and closes every stream.
func (s *streams) close() {
	s.stop.Store(true)
	<-s.done
	s.mu.Lock()
	defer s.mu.Unlock()
	for fd := range s.open {
		syscall.Close(fd)
	}
	s.open = map[int]*stream{}
	syscall.Close(s.epoll)
}

// epollWait is syscall.EpollWait without the scheduler hand-over (see streams).
func epollWait(epoll int, events []syscall.EpollEvent, milliseconds int) (int, error) {
	ready, _, errno := syscall.RawSyscall6(syscall.SYS_EPOLL_PWAIT, uintptr(epoll),
		uintptr(unsafe.Pointer(&events[0])), uintptr(len(events)), uintptr(milliseconds), 0, 0)
	if errno != 0 {
		return 0, errno
	}
	return int(ready), nil
}

// readRaw is syscall.Read for a non-blocking descriptor, without the scheduler hand-over.
func readRaw(fd int, buffer []byte) (int, error) {
	n, _, errno := syscall.RawSyscall(syscall.SYS_READ, uintptr(fd),
		uintptr(unsafe.Pointer(&buffer[0])), uintptr(len(buffer)))
	if errno != 0 {
		return -1, errno
	}
	return int(n), nil
}
