package ship

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// master listens on a loopback port and runs the server handshake on
// every connection; each outcome goes to errs. An accepted slave gets a
// MasterStatus, to show the stream works over the chosen transport.
type master struct {
	addr string
	errs chan error
}

func startMaster(t *testing.T, conf *tls.Config) *master {
	t.Helper()
	l, err := Listen("127.0.0.1:0", conf)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	m := &master{addr: l.Addr().String(), errs: make(chan error, 16)}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, err := ServerHandshake(context.Background(), c, testServerOptions(), acceptAll)
				if err == nil {
					err = NewConn(c, ConnOptions{Heartbeat: time.Second}).
						Send(context.Background(), MasterStatus{State: StateStreaming, LastPosition: 5000})
				}
				m.errs <- err
			}()
		}
	}()
	return m
}

// connect is the slave: Dial, handshake, read the master's status.
func connect(t *testing.T, addr string, conf *tls.Config) error {
	t.Helper()
	ctx := context.Background()
	c, err := Dial(ctx, addr, conf)
	if err != nil {
		return err
	}
	defer c.Close()
	w, err := ClientHandshake(ctx, c, testClientOptions())
	if err != nil {
		return err
	}
	m, err := NewConn(c, ConnOptions{Heartbeat: w.Heartbeat * 20}).Receive(ctx)
	if err != nil {
		return err
	}
	if st, ok := m.(MasterStatus); !ok || st.State != StateStreaming {
		t.Errorf("got %+v", m)
	}
	return nil
}

func (m *master) result(t *testing.T) error {
	t.Helper()
	select {
	case err := <-m.errs:
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("the master's handshake never ended")
		return nil
	}
}

func serverConf(t *testing.T, p testPKI) *tls.Config {
	t.Helper()
	conf, err := ServerTLSConfig(p.serverCert, p.serverKey, p.ca)
	if err != nil {
		t.Fatal(err)
	}
	return conf
}

func clientConf(t *testing.T, cert, key, ca string) *tls.Config {
	t.Helper()
	conf, err := ClientTLSConfig(cert, key, ca, "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	return conf
}

func TestTLSModes(t *testing.T) {
	p := newPKI(t)
	slaveTLS := clientConf(t, p.clientCert, p.clientKey, p.ca)

	t.Run("plaintext master, plaintext slave", func(t *testing.T) {
		m := startMaster(t, nil)
		if err := connect(t, m.addr, nil); err != nil {
			t.Fatal(err)
		}
		if err := m.result(t); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("TLS master, TLS slave", func(t *testing.T) {
		m := startMaster(t, serverConf(t, p))
		if err := connect(t, m.addr, slaveTLS); err != nil {
			t.Fatal(err)
		}
		if err := m.result(t); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("TLS master, plaintext slave", func(t *testing.T) {
		m := startMaster(t, serverConf(t, p))
		err := connect(t, m.addr, nil)
		if !errors.Is(err, ErrTLSMismatch) || err.Error() != msgTLSRequired {
			t.Fatalf("slave: %v", err)
		}
		if err := m.result(t); !errors.Is(err, ErrTLSMismatch) || !strings.Contains(err.Error(), "without TLS") {
			t.Fatalf("master: %v", err)
		}
	})
	t.Run("plaintext master, TLS slave", func(t *testing.T) {
		m := startMaster(t, nil)
		err := connect(t, m.addr, slaveTLS)
		want := "master at " + m.addr + " does not speak TLS on its sync port; " +
			"remove tls.* from the slave config or configure TLS on the master"
		if !errors.Is(err, ErrTLSMismatch) || err.Error() != want {
			t.Fatalf("slave: got %v\nwant %s", err, want)
		}
		if err := m.result(t); !errors.Is(err, ErrTLSMismatch) || !strings.Contains(err.Error(), "speaks TLS") {
			t.Fatalf("master: %v", err)
		}
	})
}

// A TLS slave at a plaintext port that is not behind our listener (the
// server just hangs up) gets the same advice.
func TestTLSSlaveAtBarePlaintextServer(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		c, err := l.Accept()
		if err == nil {
			ServerHandshake(context.Background(), c, testServerOptions(), acceptAll)
			c.Close()
		}
	}()
	p := newPKI(t)
	_, err = Dial(context.Background(), l.Addr().String(), clientConf(t, "", "", p.ca))
	if !errors.Is(err, ErrTLSMismatch) {
		t.Fatalf("got %v", err)
	}
}

func TestTLSClientCertificate(t *testing.T) {
	p := newPKI(t)
	t.Run("missing", func(t *testing.T) {
		m := startMaster(t, serverConf(t, p))
		err := connect(t, m.addr, clientConf(t, "", "", p.ca))
		if err == nil || !strings.Contains(err.Error(), "set tls.cert and tls.key on the slave") {
			t.Fatalf("slave: %v", err)
		}
		if err := m.result(t); err == nil || !strings.Contains(err.Error(), "certificate") {
			t.Fatalf("master: %v", err)
		}
	})
	t.Run("signed by another CA", func(t *testing.T) {
		m := startMaster(t, serverConf(t, p))
		err := connect(t, m.addr, clientConf(t, p.strangerCert, p.strangerKey, p.ca))
		if err == nil || !strings.Contains(err.Error(), "tls.cert and tls.key") {
			t.Fatalf("slave: %v", err)
		}
		if err := m.result(t); err == nil {
			t.Fatal("the master accepted a stranger's certificate")
		}
	})
}

func TestTLSMasterCertificateChecked(t *testing.T) {
	p := newPKI(t)
	m := startMaster(t, serverConf(t, p))
	_, err := Dial(context.Background(), m.addr, clientConf(t, p.clientCert, p.clientKey, p.otherCA))
	if err == nil || !strings.Contains(err.Error(), "tls.ca on the slave") {
		t.Fatalf("unknown CA: %v", err)
	}
	conf, err := ClientTLSConfig(p.clientCert, p.clientKey, p.ca, "master.example")
	if err != nil {
		t.Fatal(err)
	}
	_, err = Dial(context.Background(), m.addr, conf)
	if err == nil || !strings.Contains(err.Error(), "master.host") {
		t.Fatalf("wrong host name: %v", err)
	}
}

func TestTLSConfigErrors(t *testing.T) {
	p := newPKI(t)
	dir := t.TempDir()
	garbage := filepath.Join(dir, "garbage.pem")
	os.WriteFile(garbage, []byte("not PEM"), 0o600)
	missing := filepath.Join(dir, "missing.pem")
	cases := []struct {
		name string
		err  func() error
		want string
	}{
		{"server cert missing", func() error { _, err := ServerTLSConfig(missing, p.serverKey, ""); return err }, "tls.cert: open " + missing},
		{"server key missing", func() error { _, err := ServerTLSConfig(p.serverCert, missing, ""); return err }, "tls.key: open " + missing},
		{"server ca garbage", func() error { _, err := ServerTLSConfig(p.serverCert, p.serverKey, garbage); return err }, "tls.ca: " + garbage + " holds no PEM certificate"},
		{"server ca without cert", func() error { _, err := ServerTLSConfig("", "", p.ca); return err }, "tls.cert and tls.key"},
		{"key of another cert", func() error { _, err := ServerTLSConfig(p.serverCert, p.clientKey, ""); return err }, "tls.key " + p.clientKey},
		{"client cert without key", func() error { _, err := ClientTLSConfig(p.clientCert, "", p.ca, "h"); return err }, "tls.cert and tls.key"},
		{"client ca missing", func() error { _, err := ClientTLSConfig("", "", missing, "h"); return err }, "tls.ca: open " + missing},
	}
	for _, c := range cases {
		err := c.err()
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v, want it to contain %q", c.name, err, c.want)
		}
	}
	if conf, err := ServerTLSConfig("", "", ""); conf != nil || err != nil {
		t.Errorf("no TLS keys: got %v, %v", conf, err)
	}
	if conf, err := ClientTLSConfig("", "", "", "h"); conf != nil || err != nil {
		t.Errorf("no TLS keys: got %v, %v", conf, err)
	}
}

// Accept must not wait for a client's first byte: a silent client must not
// keep the next slave out.
func TestListenerSilentClientDoesNotBlockOthers(t *testing.T) {
	m := startMaster(t, nil)
	silent, err := net.Dial("tcp", m.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	if err := connect(t, m.addr, nil); err != nil {
		t.Fatal(err)
	}
	if err := m.result(t); err != nil {
		t.Fatalf("master: %v", err)
	}
}

func TestListenerRejectsStrangers(t *testing.T) {
	m := startMaster(t, serverConf(t, newPKI(t)))
	c, err := net.Dial("tcp", m.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte("GET / HTTP/1.0\r\n\r\n"))
	if err := m.result(t); !errors.Is(err, ErrProtocol) {
		t.Fatalf("master: %v", err)
	}
}

func TestDialNoMaster(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	_, err = Dial(context.Background(), addr, nil)
	if err == nil || !strings.Contains(err.Error(), "start the master first") {
		t.Fatalf("got %v", err)
	}
}
