package ship

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"syscall"
)

// tlsAlertRecord is the first byte of a TLS alert record.
const tlsAlertRecord = 0x15

// Both ends are schedsync, so there is no old peer to accommodate.
const minTLSVersion = tls.VersionTLS13

// ServerTLSConfig is the master's TLS configuration from tls.cert, tls.key
// and tls.ca (file paths). It returns nil, nil when all three are empty:
// the sync port is then plain TCP. With tls.ca, every slave must present a
// client certificate that chains to it.
func ServerTLSConfig(cert, key, ca string) (*tls.Config, error) {
	if cert == "" && key == "" && ca == "" {
		return nil, nil
	}
	if cert == "" || key == "" {
		return nil, errors.New("tls.cert and tls.key: the master needs both to serve TLS on its sync port")
	}
	pair, err := loadKeyPair(cert, key)
	if err != nil {
		return nil, err
	}
	conf := &tls.Config{MinVersion: minTLSVersion, Certificates: []tls.Certificate{pair}}
	if ca != "" {
		pool, err := loadCA(ca)
		if err != nil {
			return nil, err
		}
		conf.ClientCAs = pool
		conf.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return conf, nil
}

// ClientTLSConfig is the slave's TLS configuration: tls.ca verifies the
// master's certificate (the system roots do when it is empty), tls.cert and
// tls.key, if set, are presented as the client certificate. serverName is
// the name the master's certificate must be issued for (master.host; if
// empty, Dial uses the host of the address it dials). It returns nil, nil
// when cert, key and ca are all empty: plain TCP.
func ClientTLSConfig(cert, key, ca, serverName string) (*tls.Config, error) {
	if cert == "" && key == "" && ca == "" {
		return nil, nil
	}
	if (cert == "") != (key == "") {
		return nil, errors.New("tls.cert and tls.key: set both, or neither")
	}
	conf := &tls.Config{MinVersion: minTLSVersion, ServerName: serverName}
	if cert != "" {
		pair, err := loadKeyPair(cert, key)
		if err != nil {
			return nil, err
		}
		conf.Certificates = []tls.Certificate{pair}
	}
	if ca != "" {
		pool, err := loadCA(ca)
		if err != nil {
			return nil, err
		}
		conf.RootCAs = pool
	}
	return conf, nil
}

func loadKeyPair(cert, key string) (tls.Certificate, error) {
	certPEM, err := os.ReadFile(cert)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("tls.cert: %w", err)
	}
	keyPEM, err := os.ReadFile(key)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("tls.key: %w", err)
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("tls.cert %s and tls.key %s: %w", cert, key, err)
	}
	return pair, nil
}

func loadCA(path string) (*x509.CertPool, error) {
	pemBytes, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("tls.ca: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pemBytes) {
		return nil, fmt.Errorf("tls.ca: %s holds no PEM certificate", path)
	}
	return pool, nil
}

// Dial connects to the master's sync port at addr (host:port), through TLS
// when conf is not nil, and completes the TLS handshake. The whole takes at
// most DefaultHandshakeTimeout, less if ctx ends sooner. A TLS slave at a
// plaintext master gets an error matching ErrTLSMismatch at once.
func Dial(ctx context.Context, addr string, conf *tls.Config) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, DefaultHandshakeTimeout)
	defer cancel()
	var d net.Dialer
	raw, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("connect to the master at %s (start the master first if its sync service is down): %w", addr, err)
	}
	if conf == nil {
		return raw, nil
	}
	if conf.ServerName == "" {
		conf = conf.Clone()
		conf.ServerName, _, _ = net.SplitHostPort(addr)
	}
	tc := tls.Client(raw, conf)
	if err := tc.HandshakeContext(ctx); err != nil {
		raw.Close()
		return nil, explainDialTLS("master at "+addr, err)
	}
	return tc, nil
}

// explainDialTLS turns a failed TLS handshake into what the operator must
// change, naming the config key.
func explainDialTLS(peer string, err error) error {
	var (
		header    tls.RecordHeaderError
		verify    *tls.CertificateVerificationError
		hostname  x509.HostnameError
		authority x509.UnknownAuthorityError
	)
	switch {
	case errors.As(err, &header),
		// A peer that is not TLS may also just hang up on our ClientHello.
		errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, syscall.ECONNRESET):
		return &kindError{kind: ErrTLSMismatch, cause: err, msg: peer +
			" does not speak TLS on its sync port; remove tls.* from the slave config or configure TLS on the master"}
	case errors.As(err, &hostname):
		return fmt.Errorf("verify the certificate of the %s: set master.host to a name or address "+
			"the master's tls.cert is issued for: %w", peer, err)
	case errors.As(err, &authority), errors.As(err, &verify):
		return fmt.Errorf("verify the certificate of the %s: tls.ca on the slave must hold "+
			"the CA that signed the master's tls.cert: %w", peer, err)
	case isTLSAlert(err):
		return explainTLSAlert(peer, err)
	case errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("TLS handshake with the %s: no answer within %s: %w", peer, DefaultHandshakeTimeout, err)
	}
	return fmt.Errorf("TLS handshake with the %s: %w", peer, err)
}

// isTLSAlert reports whether err is an alert the peer's TLS stack sent.
// crypto/tls reports those as a net.OpError with Op "remote error".
func isTLSAlert(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "remote error"
}

// explainTLSAlert explains the alerts a master sends about the slave's
// client certificate. With TLS 1.3 they arrive after the slave's side of
// the TLS handshake has completed, on the first read of our handshake.
func explainTLSAlert(peer string, err error) error {
	if strings.Contains(err.Error(), "certificate") {
		return fmt.Errorf("the %s rejected the slave's TLS client certificate; set tls.cert and tls.key "+
			"on the slave to a certificate signed by the CA in the master's tls.ca: %w", peer, err)
	}
	return fmt.Errorf("TLS with the %s failed: %w", peer, err)
}
