// Posts a body of a given size to a URL the way kube-apiserver's webhook client does (Go's
// net/http, body written while the response is read) and prints the status and the body.
//
//	go run ./tests/go/post_large CA_FILE URL BYTES h1|h2
package main

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"time"
)

func main() {
	if len(os.Args) != 5 {
		fmt.Fprintln(os.Stderr, "usage: post_large CA_FILE URL BYTES h1|h2")
		os.Exit(2)
	}
	caPEM, err := os.ReadFile(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(caPEM)
	size, err := strconv.Atoi(os.Args[3])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	transport := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}
	if os.Args[4] == "h2" {
		transport.ForceAttemptHTTP2 = true
	} else {
		// A non-nil empty map turns HTTP/2 off.
		transport.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
	}
	client := &http.Client{Transport: transport, Timeout: 30 * time.Second}
	resp, err := client.Post(os.Args[2], "application/json", bytes.NewReader(bytes.Repeat([]byte(" "), size)))
	if err != nil {
		fmt.Fprintln(os.Stderr, "request failed:", err)
		os.Exit(1)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		fmt.Fprintln(os.Stderr, "reading the body failed:", err)
		os.Exit(1)
	}
	fmt.Printf("%s %d %s", resp.Proto, resp.StatusCode, body)
}
