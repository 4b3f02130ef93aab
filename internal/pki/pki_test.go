package pki

import (
	"crypto/tls"
	"crypto/x509"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestInitMakesAWorkingMutualTLSPair: the master's certificate verifies
// for its address, the slave's as a client, both against the CA, over a
// real TLS handshake; a second Init reuses the CA; files are not
// overwritten; keys are 0600.
func TestInitMakesAWorkingMutualTLSPair(t *testing.T) {
	dir := t.TempDir()
	res, err := Init(dir, []Node{{"master", []string{"127.0.0.1", "db1.example"}}, {"slave1", []string{"127.0.0.2"}}}, 30)
	if err != nil {
		t.Fatal(err)
	}
	if !res.CACreated || len(res.Nodes) != 2 {
		t.Fatalf("result %+v", res)
	}
	for _, f := range []string{res.CAKey, res.Nodes[0].Key, res.Nodes[1].Key} {
		if st, err := os.Stat(f); err != nil || st.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v (%v), want 0600", f, st.Mode().Perm(), err)
		}
	}
	pool := x509.NewCertPool()
	caPEM, _ := os.ReadFile(res.CA)
	if !pool.AppendCertsFromPEM(caPEM) {
		t.Fatal("ca.crt does not parse")
	}
	server, err := tls.LoadX509KeyPair(res.Nodes[0].Cert, res.Nodes[0].Key)
	if err != nil {
		t.Fatal(err)
	}
	client, err := tls.LoadX509KeyPair(res.Nodes[1].Cert, res.Nodes[1].Key)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{server},
		ClientCAs: pool, ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS12})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_ = c.SetDeadline(time.Now().Add(5 * time.Second))
			_, _ = c.Write([]byte("ok")) // runs the handshake first
			c.Close()
		}
	}()
	conn, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{Certificates: []tls.Certificate{client},
		RootCAs: pool, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12})
	if err != nil {
		t.Fatalf("mutual TLS handshake: %v", err)
	}
	if b, _ := io.ReadAll(conn); string(b) != "ok" {
		t.Errorf("read %q", b)
	}
	conn.Close()

	// A wrong name does not verify.
	if _, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{RootCAs: pool, ServerName: "other.example"}); err == nil {
		t.Error("the master's certificate verified for a host it does not name")
	}

	again, err := Init(dir, []Node{{"slave2", []string{"slave2.example"}}}, 30)
	if err != nil || again.CACreated {
		t.Fatalf("second Init: %+v, %v; want the existing CA reused", again, err)
	}
	if _, err := Init(dir, []Node{{"slave2", []string{"x"}}}, 30); err == nil {
		t.Error("Init overwrote an existing node's files")
	}
	if _, err := Init(filepath.Join(dir, "x"), []Node{{"bad name", []string{"h"}}}, 30); err == nil {
		t.Error("a node name with a space was accepted")
	}
}
