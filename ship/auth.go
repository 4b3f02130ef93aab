package ship

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"errors"
)

// Roles in a proof. Each side proves with its own role, so a master's
// proof can never be replayed as a slave's, nor the reverse.
const (
	roleSlave  = "slave"
	roleMaster = "master"
)

// authLabel separates these HMACs from any other use of the same token.
const authLabel = "schedsync sync-port auth"

// errNoToken guards against an empty secret, which would make the HMAC a
// public function. Config validation should have caught it.
var errNoToken = errors.New("sync.token is empty; set sync.token or sync.token_file")

func newNonce() nonce {
	var n nonce
	rand.Read(n[:]) // never fails (crypto/rand crashes the program instead)
	return n
}

// computeProof is HMAC-SHA256 keyed with the token over
//
//	label 0x00 role 0x00 version(2) nonceSlave(32) nonceMaster(32) len(name)(2) name
//
// Every variable-length field is delimited or length-prefixed, so two
// different inputs never produce the same message. The proof binds the
// protocol version (no downgrade), both nonces (no replay: each side picks
// one fresh), the role (no reflection) and the slave's name (the master's
// bookkeeping is per name).
func computeProof(token, role string, version uint16, slaveNonce, masterNonce nonce, name string) proof {
	m := hmac.New(sha256.New, []byte(token))
	msg := make([]byte, 0, len(authLabel)+len(role)+2+2+2*nonceSize+2+len(name))
	msg = append(msg, authLabel...)
	msg = append(msg, 0)
	msg = append(msg, role...)
	msg = append(msg, 0)
	msg = appendU16(msg, version)
	msg = append(msg, slaveNonce[:]...)
	msg = append(msg, masterNonce[:]...)
	msg = appendStr(msg, name)
	m.Write(msg)
	var p proof
	copy(p[:], m.Sum(nil))
	return p
}

// checkProof compares in constant time, so the time to reject a proof says
// nothing about how much of it was right.
func checkProof(got proof, token, role string, version uint16, slaveNonce, masterNonce nonce, name string) bool {
	want := computeProof(token, role, version, slaveNonce, masterNonce, name)
	return hmac.Equal(got[:], want[:])
}
