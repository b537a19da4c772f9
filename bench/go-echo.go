// go-echo: the echo server in Go, a peer of epoll-echo for bench/run.sh: a
// goroutine per connection, blocking-style Read/Write on the runtime's
// netpoller (epoll).  bench/run.sh runs it with GOMAXPROCS=1 on one CPU.
//
// Each goroutine reads into its own 16 KiB buffer and writes the bytes back
// (Write sends them all).  Go sets TCP_NODELAY on accepted connections.
//
// Usage: go-echo [-H ADDR] [-p PORT]      (defaults 127.0.0.1, 8080; 0 = any)
// Prints "listening on HOST:PORT" once listening; exits 0 on SIGINT/SIGTERM.
// Standard library only; built only when configure finds go (golang-go).
package main

import (
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"strconv"
	"syscall"
)

const bufSize = 16 * 1024

func serve(c net.Conn) {
	defer c.Close()
	buf := make([]byte, bufSize)
	for {
		n, err := c.Read(buf)
		if n > 0 {
			if _, werr := c.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func main() {
	host := flag.String("H", "127.0.0.1", "address to listen on")
	port := flag.Int("p", 8080, "port (0: any)")
	flag.Parse()

	// Go raises RLIMIT_NOFILE's soft limit to the hard one itself (1.19+).
	l, err := net.Listen("tcp", net.JoinHostPort(*host, strconv.Itoa(*port)))
	if err != nil {
		fmt.Fprintln(os.Stderr, "go-echo:", err)
		os.Exit(1)
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		<-sig
		os.Exit(0)
	}()

	fmt.Printf("listening on %s:%d\n", *host, l.Addr().(*net.TCPAddr).Port)
	for {
		c, err := l.Accept()
		if err != nil {
			// EMFILE and the like: the listener stays usable
			continue
		}
		go serve(c)
	}
}
