package ship

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"
)

// Short enough that timeout tests finish fast, long enough for -race.
const testTimeout = 2 * time.Second

const testToken = "s3cret-token-for-tests"

var (
	masterID = Identity{SystemID: 7301234567890123456, DatabaseOID: 16384, Database: "scheduler",
		ServerStart: time.UnixMicro(1_700_000_000_123_456)}
	slaveID = Identity{SystemID: 7309999999999999999, DatabaseOID: 16390, Database: "scheduler",
		ServerStart: time.UnixMicro(1_700_000_500_000_000)}
)

func testClientOptions() ClientOptions {
	return ClientOptions{Token: testToken, Name: "node02", Identity: slaveID,
		Applied: 1000, Received: 1200, Epoch: 0x1234_5678_9abc, Timeout: testTimeout}
}

func testServerOptions() ServerOptions {
	return ServerOptions{Token: testToken, Timeout: testTimeout}
}

// acceptAll is a decide callback that welcomes every slave.
func acceptAll(h Hello) (Welcome, *RefusedError) {
	return Welcome{Name: "node01", Identity: masterID, LastPosition: 5000,
		StartAfter: h.Received, Epoch: 0x0fed_cba9, Heartbeat: 50 * time.Millisecond}, nil
}

type handshakeResult struct {
	hello   Hello
	welcome Welcome
	srvErr  error
	cliErr  error
}

// handshakePipe runs both sides of a handshake over net.Pipe and returns
// both outcomes; the connections are closed when the test ends.
func handshakePipe(t *testing.T, sopts ServerOptions, decide func(Hello) (Welcome, *RefusedError),
	copts ClientOptions) handshakeResult {
	t.Helper()
	sc, cc := net.Pipe()
	t.Cleanup(func() { sc.Close(); cc.Close() })
	var r handshakeResult
	done := make(chan struct{})
	go func() {
		defer close(done)
		r.hello, r.srvErr = ServerHandshake(context.Background(), sc, sopts, decide)
		if r.srvErr != nil {
			sc.Close() // as the service does; unblocks a client still writing
		}
	}()
	r.welcome, r.cliErr = ClientHandshake(context.Background(), cc, copts)
	if r.cliErr != nil {
		cc.Close()
	}
	<-done
	return r
}

// tcpPair returns both ends of a loopback TCP connection.
func tcpPair(t *testing.T) (a, b net.Conn) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			accepted <- nil
			return
		}
		accepted <- c
	}()
	a, err = net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	b = <-accepted
	if b == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}

// testPKI is a throwaway CA with a server and a client certificate, plus
// an unrelated CA, as PEM files in a temporary directory.
type testPKI struct {
	ca, otherCA               string
	serverCert, serverKey     string
	clientCert, clientKey     string
	strangerCert, strangerKey string // signed by otherCA
}

func newPKI(t *testing.T) testPKI {
	t.Helper()
	dir := t.TempDir()
	caCert, caKey := makeCA(t, "schedsync test CA")
	otherCert, otherKey := makeCA(t, "some other CA")
	var p testPKI
	p.ca = writePEM(t, dir, "ca.pem", "CERTIFICATE", caCert.Raw)
	p.otherCA = writePEM(t, dir, "other-ca.pem", "CERTIFICATE", otherCert.Raw)
	p.serverCert, p.serverKey = makeLeaf(t, dir, "server", caCert, caKey, x509.ExtKeyUsageServerAuth)
	p.clientCert, p.clientKey = makeLeaf(t, dir, "client", caCert, caKey, x509.ExtKeyUsageClientAuth)
	p.strangerCert, p.strangerKey = makeLeaf(t, dir, "stranger", otherCert, otherKey, x509.ExtKeyUsageClientAuth)
	return p
}

var serial atomic.Int64

func nextSerial() *big.Int { return big.NewInt(serial.Add(1)) }

func makeCA(t *testing.T, cn string) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: nextSerial(), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert, key
}

func makeLeaf(t *testing.T, dir, name string, ca *x509.Certificate, caKey *ecdsa.PrivateKey,
	usage x509.ExtKeyUsage) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: nextSerial(), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage},
		DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return writePEM(t, dir, name+".pem", "CERTIFICATE", der),
		writePEM(t, dir, name+"-key.pem", "PRIVATE KEY", keyDER)
}

func writePEM(t *testing.T, dir, name, typ string, der []byte) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}
