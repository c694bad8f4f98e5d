package main

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"
)

// goSlave is a minimal Modbus RTU slave on one end of a pty pair: unit 1,
// function codes 3 and 4 (read holding/input registers) over a 300-register
// map holding 21.5 as float32 CDAB at 100-101; anything else gets exception
// 1 (illegal function). It answers as fast as it reads, so the gateway's own
// ceiling shows where pymodbus would hide it.
type goSlave struct {
	f    *os.File
	regs [300]uint16
	done chan struct{}
	err  error
}

func startGoSlave(path string) (*goSlave, error) {
	f, err := os.OpenFile(path, os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		return nil, fmt.Errorf("go slave: open %s: %w", path, err)
	}
	s := &goSlave{f: f, done: make(chan struct{})}
	s.regs[101] = 0x41AC
	go s.serve()
	return s, nil
}

// stop closes the port and waits for the serving goroutine.
func (s *goSlave) stop() error {
	s.f.Close()
	<-s.done
	if errors.Is(s.err, os.ErrClosed) || errors.Is(s.err, io.EOF) {
		return nil
	}
	return s.err
}

func (s *goSlave) serve() {
	defer close(s.done)
	var buf []byte
	rd := make([]byte, 256)
	for {
		n, err := s.f.Read(rd)
		if err != nil {
			s.err = err
			return
		}
		buf = append(buf, rd[:n]...)
		i := 0
		for len(buf)-i >= 8 {
			req := buf[i : i+8]
			if crc16(req[:6]) != binary.LittleEndian.Uint16(req[6:]) {
				i++ // resynchronise on garbage
				continue
			}
			i += 8
			if req[0] != 1 {
				continue // another unit: silence, as on a bus
			}
			if _, err := s.f.Write(s.respond(req)); err != nil {
				s.err = err
				return
			}
		}
		buf = buf[:copy(buf, buf[i:])]
	}
}

func (s *goSlave) respond(req []byte) []byte {
	fc := req[1]
	addr, count := int(binary.BigEndian.Uint16(req[2:])), int(binary.BigEndian.Uint16(req[4:]))
	var out []byte
	switch {
	case fc != 3 && fc != 4:
		out = []byte{1, fc | 0x80, 1}
	case count < 1 || count > 125 || addr+count > len(s.regs):
		out = []byte{1, fc | 0x80, 2}
	default:
		out = []byte{1, fc, byte(2 * count)}
		for _, r := range s.regs[addr : addr+count] {
			out = binary.BigEndian.AppendUint16(out, r)
		}
	}
	return binary.LittleEndian.AppendUint16(out, crc16(out))
}

// crc16 is the Modbus CRC (polynomial 0xA001 reflected, initial 0xFFFF).
func crc16(b []byte) uint16 {
	crc := uint16(0xFFFF)
	for _, c := range b {
		crc ^= uint16(c)
		for range 8 {
			if crc&1 != 0 {
				crc = crc>>1 ^ 0xA001
			} else {
				crc >>= 1
			}
		}
	}
	return crc
}
