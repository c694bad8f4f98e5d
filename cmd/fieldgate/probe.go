package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/fieldgate/fieldgate/gateway"
)

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

func cmdProbe(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("probe", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o gateway.ProbeOptions
	fs.StringVar(&o.Port, "port", "", "serial port for Modbus RTU (e.g. /dev/serial/by-id/...)")
	fs.StringVar(&o.Address, "address", "", "host:port for Modbus TCP")
	fs.IntVar(&o.Baud, "baud", 9600, "RTU baud rate")
	fs.StringVar(&o.Parity, "parity", "N", "RTU parity: N, E or O")
	fs.IntVar(&o.DataBits, "data-bits", 8, "RTU data bits")
	fs.IntVar(&o.StopBits, "stop-bits", 1, "RTU stop bits")
	fs.IntVar(&o.Unit, "unit", 1, "Modbus unit (slave) id")
	fs.StringVar(&o.Table, "table", "holding", "holding, input, coil or discrete")
	fs.IntVar(&o.Register, "register", 0, "first register address (0-based)")
	fs.IntVar(&o.Count, "count", 4, "registers to read (1-125)")
	fs.DurationVar(&o.Timeout, "timeout", time.Second, "response timeout")
	expect := fs.String("expect", "", "the value you expect to see: interpretations closest to it come first")
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	switch {
	case o.Port != "" && o.Address == "":
		o.Transport = "rtu"
	case o.Address != "" && o.Port == "":
		o.Transport = "tcp"
	default:
		fmt.Fprintln(stderr, "fieldgate probe: give exactly one of --port (RTU) or --address (TCP)")
		return exitUsage
	}
	if *expect != "" {
		v, err := strconv.ParseFloat(*expect, 64)
		if err != nil {
			fmt.Fprintf(stderr, "fieldgate probe: --expect %q is not a number\n", *expect)
			return exitUsage
		}
		o.Expect = &v
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := gateway.Probe(ctx, o, stdout); err != nil {
		fmt.Fprintln(stderr, "fieldgate probe:", err)
		return exitRuntime
	}
	return exitOK
}
