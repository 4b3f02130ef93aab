// Package ship is the wire protocol between the sync services: the slave
// dials the master's sync port, both sides authenticate, and the master
// streams spool records while the slave acknowledges what it received and
// applied. This package owns the bytes on that connection and nothing else:
// framing, the handshake, authentication, TLS and dead-peer deadlines. What
// to stream, from where, and whether a slave may connect at all (same
// repository, backlog, duplicate name) are the service's decisions; the
// protocol only carries them (see ServerHandshake's decide callback).
//
// It must never send sync.token over the wire, in any form an eavesdropper
// could replay, nor put it in an error or a log line: both sides prove
// knowledge of the token with an HMAC over fresh nonces. It must never
// trust a length or a count read from the network: every decoder checks it
// against a limit before allocating, and is fuzz-tested.
//
// # Connection
//
//	slave                                          master
//	  [TLS ClientHello ...]  ───────────────▶     listener peeks the first byte:
//	                                                0x16 = TLS, 'S' = plaintext magic;
//	                                                the wrong one gets a clear refusal
//	  "SSYN" Hello{version, name, nonceS,  ─────▶
//	         identity, applied, received}
//	                                       ◀─────  "SSYN" Challenge{version, nonceM}
//	                                                (or Error: version mismatch)
//	  Proof{HMAC(token, slave, ...)}       ─────▶  hmac.Equal, then decide(Hello)
//	                                       ◀─────  Welcome{HMAC(token, master, ...),
//	                                                identity, positions, heartbeat}
//	                                                (or Error: auth, same repository,
//	                                                backlog, duplicate, not ready)
//	  slave checks the master's proof before it accepts a single record
//	                                       ◀────▶  Records, Heartbeat, Ack,
//	                                                MasterStatus, Error
//
// The slave proves first so that the master reveals an HMAC of the token
// only to a peer that already knows it: anyone who can reach the sync port
// could otherwise collect proofs to brute-force a weak token offline. Both
// proofs cover both nonces, so neither can be replayed in another session.
//
// # Frames
//
//	length  uint32 big-endian   payload bytes, not counting this header
//	type    uint8               frame type
//	payload length bytes
//
// The frame header, the magic, the version field at the front of Hello and
// Challenge, and the Error frame are frozen across protocol versions, so
// that any two versions can at least tell each other which one to upgrade.
package ship
