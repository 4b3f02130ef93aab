package ship

import "testing"

// Each input of the proof must change it: otherwise a proof from one
// context could be replayed in another.
func TestProofBindsEveryInput(t *testing.T) {
	ns, nm := newNonce(), newNonce()
	base := computeProof(testToken, roleSlave, 1, ns, nm, "node02")
	variants := map[string]proof{
		"token":        computeProof(testToken+"x", roleSlave, 1, ns, nm, "node02"),
		"role":         computeProof(testToken, roleMaster, 1, ns, nm, "node02"),
		"version":      computeProof(testToken, roleSlave, 2, ns, nm, "node02"),
		"slave nonce":  computeProof(testToken, roleSlave, 1, newNonce(), nm, "node02"),
		"master nonce": computeProof(testToken, roleSlave, 1, ns, newNonce(), "node02"),
		"swapped":      computeProof(testToken, roleSlave, 1, nm, ns, "node02"),
		"name":         computeProof(testToken, roleSlave, 1, ns, nm, "node03"),
	}
	for what, p := range variants {
		if p == base {
			t.Errorf("changing the %s leaves the proof unchanged", what)
		}
	}
	if !checkProof(base, testToken, roleSlave, 1, ns, nm, "node02") {
		t.Fatal("a correct proof is rejected")
	}
	if checkProof(variants["role"], testToken, roleSlave, 1, ns, nm, "node02") {
		t.Fatal("a master's proof passes as a slave's")
	}
}

func TestNoncesDiffer(t *testing.T) {
	if newNonce() == newNonce() {
		t.Fatal("two nonces are equal")
	}
}
