// The floor of moving a blob in Go, as Spegel moves it: a holder that sends a file to a socket (io.Copy from an
// *os.File to a TCP connection, which Go turns into sendfile, as net/http's ServeContent does), and a proxy that
// copies a peer's socket to its client's with a 32 KiB buffer (httputil.ReverseProxy's copy loop), optionally hashing
// what it copies. Used by bench/floor.ts, which runs the same roles in Node and compares.
//
//	floor holder FILE   listens on 127.0.0.1:0, prints the port, sends FILE to every connection
//	floor proxy PORT    listens on 127.0.0.1:0, prints the port, copies 127.0.0.1:PORT to every connection
//	                    (FLOOR_HASH=1: SHA-256 of the copied bytes too)
package main

import (
	"crypto/sha256"
	"fmt"
	"hash"
	"io"
	"net"
	"os"
)

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: floor holder FILE | floor proxy PORT")
		os.Exit(2)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Println(ln.Addr().(*net.TCPAddr).Port)
	for {
		conn, err := ln.Accept()
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		switch os.Args[1] {
		case "holder":
			go hold(conn, os.Args[2])
		case "proxy":
			go proxy(conn, os.Args[2], os.Getenv("FLOOR_HASH") == "1")
		default:
			fmt.Fprintln(os.Stderr, "unknown role", os.Args[1])
			os.Exit(2)
		}
	}
}

func hold(conn net.Conn, path string) {
	defer conn.Close()
	f, err := os.Open(path)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return
	}
	defer f.Close()
	if _, err := io.Copy(conn, f); err != nil {
		fmt.Fprintln(os.Stderr, err)
	}
}

// onlyWriter and onlyReader hide the connections' ReadFrom and WriteTo, so the copy goes through the buffer as
// ReverseProxy's does (it reads a response body and writes to an http.ResponseWriter, not socket to socket).
type onlyWriter struct{ io.Writer }
type onlyReader struct{ io.Reader }

func proxy(client net.Conn, port string, hashed bool) {
	defer client.Close()
	up, err := net.Dial("tcp", "127.0.0.1:"+port)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return
	}
	defer up.Close()
	var dst io.Writer = onlyWriter{client}
	var h hash.Hash
	if hashed {
		h = sha256.New()
		dst = io.MultiWriter(dst, h)
	}
	buf := make([]byte, 32*1024)
	if _, err := io.CopyBuffer(onlyWriter{dst}, onlyReader{up}, buf); err != nil {
		fmt.Fprintln(os.Stderr, err)
	}
	if h != nil {
		_ = h.Sum(nil)
	}
}
