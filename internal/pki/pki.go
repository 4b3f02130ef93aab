// Package pki makes the certificates of a schedsync deployment: one CA, and
// for each node a key and a certificate signed by it, good both for serving
// the sync port (as master) and for connecting to it (as slave), since a
// failover swaps the roles. `schedsync tls init` drives it.
package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"time"
)

// Node is one node to issue a certificate for: its name (node.name) and
// the host names or addresses the others reach it by.
type Node struct {
	Name  string
	Hosts []string
}

// Files are the paths of what Init wrote for one node.
type Files struct {
	Node      string
	Cert, Key string
}

// Result is what Init did.
type Result struct {
	CA        string // the CA certificate (tls.ca on every node)
	CAKey     string
	CACreated bool // false: an existing CA signed the nodes
	Nodes     []Files
}

var validName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// Init writes into dir a CA (unless dir/ca.key exists already, which then
// signs) and a key and certificate per node, valid for days. It never
// overwrites a node's files.
func Init(dir string, nodes []Node, days int) (Result, error) {
	if len(nodes) == 0 {
		return Result{}, errors.New("no node given: name each node and its hosts, such as --node master=10.0.0.1 --node slave1=10.0.0.2")
	}
	if days < 1 {
		return Result{}, errors.New("the validity must be at least 1 day")
	}
	for _, n := range nodes {
		if !validName.MatchString(n.Name) || n.Name == "ca" {
			return Result{}, fmt.Errorf("node name %q: use letters, digits, . _ - (and not \"ca\")", n.Name)
		}
		if len(n.Hosts) == 0 {
			return Result{}, fmt.Errorf("node %s: give the host names or addresses the other nodes reach it by", n.Name)
		}
		for _, f := range []string{n.Name + ".crt", n.Name + ".key"} {
			if _, err := os.Stat(filepath.Join(dir, f)); err == nil {
				return Result{}, fmt.Errorf("%s exists already: remove it to issue a new one", filepath.Join(dir, f))
			}
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return Result{}, err
	}
	res := Result{CA: filepath.Join(dir, "ca.crt"), CAKey: filepath.Join(dir, "ca.key")}
	caCert, caKey, err := loadCA(res.CA, res.CAKey)
	if errors.Is(err, fs.ErrNotExist) {
		caCert, caKey, err = newCA(res.CA, res.CAKey, days)
		res.CACreated = true
	}
	if err != nil {
		return res, err
	}
	for _, n := range nodes {
		f := Files{Node: n.Name, Cert: filepath.Join(dir, n.Name+".crt"), Key: filepath.Join(dir, n.Name+".key")}
		if err := issue(n, f, caCert, caKey, days); err != nil {
			return res, err
		}
		res.Nodes = append(res.Nodes, f)
	}
	return res, nil
}

func newCA(certPath, keyPath string, days int) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial(), Subject: pkix.Name{CommonName: "schedsync CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.AddDate(0, 0, days),
		IsCA: true, BasicConstraintsValid: true, MaxPathLenZero: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, err
	}
	if err := writeKey(keyPath, key); err != nil {
		return nil, nil, err
	}
	if err := writePEM(certPath, "CERTIFICATE", der, 0o644); err != nil {
		return nil, nil, err
	}
	cert, err := x509.ParseCertificate(der)
	return cert, key, err
}

func loadCA(certPath, keyPath string) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	keyPEM, err := os.ReadFile(keyPath)
	if err != nil {
		return nil, nil, err
	}
	certPEM, err := os.ReadFile(certPath)
	if err != nil {
		return nil, nil, fmt.Errorf("%s exists but %w", keyPath, err)
	}
	kb, _ := pem.Decode(keyPEM)
	cb, _ := pem.Decode(certPEM)
	if kb == nil || cb == nil {
		return nil, nil, fmt.Errorf("%s or %s is not PEM", certPath, keyPath)
	}
	key, err := x509.ParseECPrivateKey(kb.Bytes)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", keyPath, err)
	}
	cert, err := x509.ParseCertificate(cb.Bytes)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", certPath, err)
	}
	if !cert.IsCA {
		return nil, nil, fmt.Errorf("%s is not a CA certificate", certPath)
	}
	return cert, key, nil
}

func issue(n Node, f Files, ca *x509.Certificate, caKey *ecdsa.PrivateKey, days int) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial(), Subject: pkix.Name{CommonName: n.Name},
		NotBefore: now.Add(-time.Hour), NotAfter: now.AddDate(0, 0, days),
		KeyUsage: x509.KeyUsageDigitalSignature,
		// Both: a node serves as master and connects as slave, and a
		// failover swaps them.
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	for _, h := range n.Hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return err
	}
	if err := writeKey(f.Key, key); err != nil {
		return err
	}
	return writePEM(f.Cert, "CERTIFICATE", der, 0o644)
}

func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	return n
}

func writeKey(path string, key *ecdsa.PrivateKey) error {
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return err
	}
	return writePEM(path, "EC PRIVATE KEY", der, 0o600)
}

// writePEM creates path (never overwriting) with mode perm.
func writePEM(path, typ string, der []byte, perm os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return err
	}
	if err := pem.Encode(f, &pem.Block{Type: typ, Bytes: der}); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
