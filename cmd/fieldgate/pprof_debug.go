//go:build fieldgate_pprof

package main

import (
	"net/http"
	_ "net/http/pprof"
	"os"
)

func init() {
	if a := os.Getenv("FIELDGATE_PPROF"); a != "" {
		go func() { _ = http.ListenAndServe(a, nil) }()
	}
}
