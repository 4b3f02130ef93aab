package quartz

import (
	"encoding/binary"
	"math"
	"math/rand/v2"
)

// Quartz stores JobDataMaps, calendars and custom triggers as Java-serialized
// objects. javaStream writes byte strings that look like them (the stream
// header, class descriptors with their serialVersionUIDs, strings, boxed
// longs, byte arrays) so that the replicated bytea values have the shape and
// size of real ones: mostly ASCII structure with a binary, incompressible
// tail. Nothing here needs to be readable by a JVM.
type javaStream struct{ b []byte }

// Object Serialization Stream Protocol constants (java.io.ObjectStreamConstants).
const (
	tcNull       = 0x70
	tcClassDesc  = 0x72
	tcObject     = 0x73
	tcString     = 0x74
	tcArray      = 0x75
	tcBlockData  = 0x77
	tcEndBlock   = 0x78
	tcLongString = 0x7c

	scWriteMethod  = 0x01
	scSerializable = 0x02
)

// javaField is a serializable field of a class descriptor: a primitive type
// code ('Z', 'I', 'J', 'F'...) or 'L' with the field's class signature.
type javaField struct {
	code      byte
	name      string
	signature string // for 'L' and '[' fields
}

func newJavaStream() *javaStream {
	return &javaStream{b: []byte{0xac, 0xed, 0x00, 0x05}}
}

func (s *javaStream) u8(v byte)    { s.b = append(s.b, v) }
func (s *javaStream) u16(v uint16) { s.b = binary.BigEndian.AppendUint16(s.b, v) }
func (s *javaStream) u32(v uint32) { s.b = binary.BigEndian.AppendUint32(s.b, v) }
func (s *javaStream) u64(v uint64) { s.b = binary.BigEndian.AppendUint64(s.b, v) }

func (s *javaStream) utf(v string) {
	if len(v) > math.MaxUint16 {
		v = v[:math.MaxUint16]
	}
	s.u16(uint16(len(v)))
	s.b = append(s.b, v...)
}

// classDesc writes a class descriptor; each superclass follows its subclass,
// and the chain ends with TC_NULL.
func (s *javaStream) classDesc(name string, suid uint64, flags byte, fields ...javaField) {
	s.u8(tcClassDesc)
	s.utf(name)
	s.u64(suid)
	s.u8(flags)
	s.u16(uint16(len(fields)))
	for _, f := range fields {
		s.u8(f.code)
		s.utf(f.name)
		if f.code == 'L' || f.code == '[' {
			s.str(f.signature)
		}
	}
	s.u8(tcEndBlock)
}

func (s *javaStream) str(v string) {
	if len(v) <= math.MaxUint16 {
		s.u8(tcString)
		s.utf(v)
		return
	}
	s.u8(tcLongString)
	s.u64(uint64(len(v)))
	s.b = append(s.b, v...)
}

// long writes a java.lang.Long.
func (s *javaStream) long(v int64) {
	s.u8(tcObject)
	s.classDesc("java.lang.Long", 0x3b8be490cc8f23df, scSerializable, javaField{code: 'J', name: "value"})
	s.classDesc("java.lang.Number", 0x86ac951d0b94e08b, scSerializable)
	s.u8(tcNull)
	s.u64(uint64(v))
}

// byteArray writes a byte[].
func (s *javaStream) byteArray(p []byte) {
	s.u8(tcArray)
	s.classDesc("[B", 0xacf317f8060854e0, scSerializable)
	s.u8(tcNull)
	s.u32(uint32(len(p)))
	s.b = append(s.b, p...)
}

// mapEntry is one key and value of a serialized map; the value is a string,
// an int64 (a Long) or a []byte.
type mapEntry struct {
	key   string
	value any
}

// jobDataMap serializes an org.quartz.JobDataMap holding entries, as Quartz
// writes JOB_DATA when org.quartz.jobStore.useProperties is false.
func jobDataMap(entries []mapEntry) []byte {
	s := newJavaStream()
	s.u8(tcObject)
	s.classDesc("org.quartz.JobDataMap", 0x9fb083e8bfa9b0cb, scSerializable)
	s.classDesc("org.quartz.utils.StringKeyDirtyFlagMap", 0x82088fc2fbc55d28, scSerializable,
		javaField{code: 'Z', name: "allowsTransientData"})
	s.classDesc("org.quartz.utils.DirtyFlagMap", 0x13e62ead28760ace, scSerializable,
		javaField{code: 'Z', name: "dirty"},
		javaField{code: 'L', name: "map", signature: "Ljava/util/Map;"})
	s.u8(tcNull)
	// Field values go from the topmost serializable superclass down:
	// DirtyFlagMap's dirty and map, then allowsTransientData.
	s.u8(1) // dirty
	s.u8(tcObject)
	s.classDesc("java.util.HashMap", 0x0507dac1c31660d1, scSerializable|scWriteMethod,
		javaField{code: 'F', name: "loadFactor"},
		javaField{code: 'I', name: "threshold"})
	s.u8(tcNull)
	capacity := uint32(16)
	for int(capacity)*3/4 < len(entries) {
		capacity *= 2
	}
	s.u32(math.Float32bits(0.75))
	s.u32(capacity * 3 / 4)
	s.u8(tcBlockData)
	s.u8(8)
	s.u32(capacity)
	s.u32(uint32(len(entries)))
	for _, e := range entries {
		s.str(e.key)
		switch v := e.value.(type) {
		case string:
			s.str(v)
		case int64:
			s.long(v)
		case []byte:
			s.byteArray(v)
		default:
			s.u8(tcNull)
		}
	}
	s.u8(tcEndBlock) // end of HashMap.writeObject's data
	s.u8(0)          // allowsTransientData
	return s.b
}

// serializedObject serializes an object of class className with string
// fields and a trailing byte[] field "data" of random bytes, the shape of a
// Quartz calendar or a custom (blob) trigger.
func serializedObject(r *rand.Rand, className string, fields []mapEntry, dataLen int) []byte {
	s := newJavaStream()
	s.u8(tcObject)
	desc := make([]javaField, 0, len(fields)+1)
	for _, f := range fields {
		desc = append(desc, javaField{code: 'L', name: f.key, signature: "Ljava/lang/String;"})
	}
	desc = append(desc, javaField{code: '[', name: "data", signature: "[B"})
	s.classDesc(className, r.Uint64(), scSerializable, desc...)
	s.u8(tcNull)
	for _, f := range fields {
		if v, ok := f.value.(string); ok {
			s.str(v)
		} else {
			s.u8(tcNull)
		}
	}
	s.byteArray(randomBytes(r, dataLen))
	return s.b
}

func randomBytes(r *rand.Rand, n int) []byte {
	p := make([]byte, n)
	for i := 0; i < n; i += 8 {
		var w [8]byte
		binary.LittleEndian.PutUint64(w[:], r.Uint64())
		copy(p[i:], w[:])
	}
	return p
}
