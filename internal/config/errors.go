package config

import (
	"errors"
	"fmt"
)

// KeyError is a configuration value that cannot be used. Its message names
// the key, the value and what to write instead:
//
//	node.role: "mastr" is not allowed; use master or slave
//	master.host: required on a slave; set the address of the master's sync service
//
// Value is already redacted for secret keys.
type KeyError struct {
	Key     string
	Value   string
	Allowed string // what to do instead, phrased as an instruction
	// Reason replaces `"<Value>" is not allowed` when the problem is not the
	// value itself, e.g. "required on a slave".
	Reason string
}

func (e *KeyError) Error() string {
	msg := e.Key + ": "
	if e.Reason != "" {
		msg += e.Reason
	} else {
		msg += fmt.Sprintf("%q is not allowed", e.Value)
	}
	if e.Allowed != "" {
		msg += "; " + e.Allowed
	}
	return msg
}

// KeyErrors lists the *KeyError values in err, which may be one KeyError,
// a wrapped one or several joined by errors.Join (as Validate returns).
func KeyErrors(err error) []*KeyError {
	var out []*KeyError
	var walk func(error)
	walk = func(err error) {
		if err == nil {
			return
		}
		if ke, ok := err.(*KeyError); ok {
			out = append(out, ke)
			return
		}
		if m, ok := err.(interface{ Unwrap() []error }); ok {
			for _, e := range m.Unwrap() {
				walk(e)
			}
			return
		}
		walk(errors.Unwrap(err))
	}
	walk(err)
	return out
}
