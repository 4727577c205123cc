package nbd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"
)

// maxInFlight bounds the requests of one connection served concurrently.
const maxInFlight = 8

// transmit serves requests until the client disconnects (nil), the stream
// breaks or ctx is cancelled. In-flight requests are always answered first.
func (s *session) transmit(ctx context.Context, exp Export) error {
	var (
		wg   sync.WaitGroup
		wmu  sync.Mutex // serialises replies
		werr error
		sem  = make(chan struct{}, maxInFlight)
		hdr  [requestHeaderSize]byte
	)
	defer wg.Wait()
	send := func(bufs net.Buffers) {
		wmu.Lock()
		defer wmu.Unlock()
		if werr == nil {
			_, werr = bufs.WriteTo(s.conn)
		}
	}
	for {
		req, err := readRequest(s.br, &hdr)
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if errors.Is(err, io.EOF) {
				return errors.New("client closed the connection without NBD_CMD_DISC")
			}
			return fmt.Errorf("reading request: %w", err)
		}
		if req.typ == cmdDisc {
			return nil
		}
		if exp.Activity != nil {
			exp.Activity.Store(time.Now().Unix())
		}
		var payload []byte
		if req.typ == cmdWrite {
			if req.length > maxPayload {
				return fmt.Errorf("WRITE of %d bytes, more than the %d advertised", req.length, maxPayload)
			}
			payload = s.srv.bufs.get(int(req.length))
			if _, err := io.ReadFull(s.br, payload); err != nil {
				return fmt.Errorf("reading WRITE payload: %w", err)
			}
		}
		if req.typ == cmdFlush {
			wg.Wait() // every write received so far is on disk before the sync
		}
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			bufs, data := s.do(exp, req, payload)
			send(bufs)
			s.srv.bufs.put(payload)
			s.srv.bufs.put(data)
		}()
		wmu.Lock()
		err = werr
		wmu.Unlock()
		if err != nil {
			return fmt.Errorf("sending reply: %w", err)
		}
	}
}

// do runs one request and returns its reply and the READ buffer to recycle.
func (s *session) do(exp Export, req request, payload []byte) (net.Buffers, []byte) {
	errno, data := s.exec(exp, req, payload)
	if errno != 0 {
		return net.Buffers{simpleReply(errno, req.cookie)}, nil
	}
	if data != nil {
		return net.Buffers{simpleReply(0, req.cookie), data}, data
	}
	return net.Buffers{simpleReply(0, req.cookie)}, nil
}

// bufPool recycles request buffers of up to maxPayload bytes, sized in
// powers of two from 64 KiB.
type bufPool [10]sync.Pool

func bufClass(n int) int {
	c := 0
	for size := 64 << 10; size < n; size <<= 1 {
		c++
	}
	return c
}

func (p *bufPool) get(n int) []byte {
	c := bufClass(n)
	if c >= len(p) {
		return make([]byte, n)
	}
	if b, ok := p[c].Get().(*[]byte); ok {
		return (*b)[:n]
	}
	return make([]byte, n, 64<<10<<c)
}

func (p *bufPool) put(b []byte) {
	if b == nil {
		return
	}
	c := bufClass(cap(b))
	if c < len(p) && cap(b) == 64<<10<<c {
		b = b[:cap(b)]
		p[c].Put(&b)
	}
}

func (s *session) exec(exp Export, req request, payload []byte) (uint32, []byte) {
	end := req.offset + uint64(req.length)
	inRange := end >= req.offset && end <= uint64(exp.Size)
	off, n := int64(req.offset), int64(req.length)
	fail := func(errno uint32, err error) (uint32, []byte) {
		s.log.Warn("nbd: request failed", "cmd", cmdName(req.typ), "offset", req.offset, "length", req.length, "errno", errno, "err", err)
		return errno, nil
	}
	writing := req.typ == cmdWrite || req.typ == cmdTrim || req.typ == cmdWriteZeroes
	switch {
	case req.typ != cmdRead && !writing && req.typ != cmdFlush:
		return fail(errInval, errors.New("unsupported command"))
	case writing && exp.ReadOnly:
		return fail(errPerm, errors.New("export is read-only"))
	case req.typ == cmdRead && req.length > maxPayload:
		return fail(errInval, fmt.Errorf("READ longer than %d bytes", maxPayload))
	case req.typ == cmdWrite && !inRange:
		return fail(errNoSpc, errors.New("write past the end of the export"))
	case req.typ != cmdFlush && !inRange:
		return fail(errInval, errors.New("request past the end of the export"))
	}
	var err error
	switch req.typ {
	case cmdRead:
		buf := s.srv.bufs.get(int(n))
		k, err := exp.Disk.ReadAt(buf, off)
		if err != nil && !errors.Is(err, io.EOF) {
			s.srv.bufs.put(buf)
			return fail(errIO, err)
		}
		clear(buf[k:]) // a short read at EOF (an image shorter than Size) reads as zeros
		return 0, buf
	case cmdFlush:
		err = syncDisk(exp.Disk)
	case cmdWrite:
		_, err = exp.Disk.WriteAt(payload, off)
	case cmdTrim:
		err = discard(exp.Disk, off, n, false)
	case cmdWriteZeroes:
		err = discard(exp.Disk, off, n, req.flags&cmdFlagNoHole != 0)
	}
	if err == nil && writing && req.flags&cmdFlagFUA != 0 {
		err = syncDisk(exp.Disk)
	}
	if err != nil {
		return fail(errIO, err)
	}
	return 0, nil
}

// discard zeroes [off, off+n): a punched hole where possible (unless
// noHole), written zeros otherwise.
func discard(d Disk, off, n int64, noHole bool) error {
	if n == 0 {
		return nil
	}
	if !noHole {
		if t, ok := d.(Trimmer); ok {
			return t.Trim(off, n)
		}
		if err := punchHole(d, off, n); err == nil {
			return nil
		}
	}
	return writeZeros(d, off, n)
}

func writeZeros(d Disk, off, n int64) error {
	zero := make([]byte, min(n, 1<<20))
	for n > 0 {
		k := min(n, int64(len(zero)))
		if _, err := d.WriteAt(zero[:k], off); err != nil {
			return err
		}
		off += k
		n -= k
	}
	return nil
}
