package spool

import (
	"cmp"
	"fmt"
	"os"
	"slices"
	"strings"

	"github.com/schedsync/schedsync/internal/fsutil"
)

// What a crash can leave behind, given the write order (records are only
// appended to the active segment; a new segment is written under a temporary
// name, synced, then renamed; sealing is a rename after a sync):
//
//   - a partial last record in the active segment, or whole records of a
//     transaction whose end was never written: cut back to the last record
//     that ends a transaction (none of it was ever reported durable);
//   - a leftover temporary segment: deleted;
//   - a sealed last segment with no active one after it (crash between
//     sealing and creating the next): a new active segment is created;
//   - an active-named segment that is not the last one (the rename that
//     sealed it was lost): checked whole, then sealed.
//
// Anything else (a bad checksum followed by more data, a gap between
// segments, a bad header) is corruption and stops Open.

type segFile struct {
	name   string
	lo, hi uint64
	sealed bool
}

// recover loads the segment list and prepares the active segment.
func (s *Spool) recover() error {
	files, err := s.listSegments()
	if err != nil {
		return err
	}
	var start int64
	hi := uint64(0)
	for i, sf := range files {
		if i > 0 && sf.lo != hi+1 {
			return corruptf(s.path(sf.name), 0, "segment starts at position %d but the one before ends at %d: a segment file is missing or extra", sf.lo, hi)
		}
		var g *segment
		switch {
		case sf.sealed:
			g, err = s.loadSealed(sf)
		case i < len(files)-1:
			g, err = s.sealStray(sf)
		default:
			g, err = s.openActive(sf)
		}
		if err != nil {
			return err
		}
		g.start = start
		start += g.size
		hi = g.hi
		s.segs = append(s.segs, g)
	}
	if len(s.segs) == 0 || s.segs[len(s.segs)-1].sealed {
		if err := s.startActive(hi+1, start); err != nil {
			return err
		}
	}
	s.last, s.durable = s.w.bpos, s.w.bpos
	s.w.last, s.w.openAt = s.w.bpos, -1
	// Whatever a crashed process left in the page cache is served to readers
	// from now on, so it must be on disk, names included.
	return fsutil.SyncDir(s.opts.Dir)
}

// listSegments returns the segment files in position order, deleting
// temporary ones. Other files in the directory are left alone.
func (s *Spool) listSegments() ([]segFile, error) {
	entries, err := os.ReadDir(s.opts.Dir)
	if err != nil {
		return nil, fmt.Errorf("list spool directory: %w", err)
	}
	var files []segFile
	for _, e := range entries {
		name := e.Name()
		if !e.Type().IsRegular() {
			continue
		}
		if base, ok := strings.CutSuffix(name, tmpExt); ok {
			if _, _, _, seg := parseSegName(base); seg {
				if err := os.Remove(s.path(name)); err != nil {
					return nil, fmt.Errorf("delete temporary segment: %w", err)
				}
			}
			continue
		}
		if lo, hi, sealed, ok := parseSegName(name); ok {
			files = append(files, segFile{name: name, lo: lo, hi: hi, sealed: sealed})
		}
	}
	slices.SortFunc(files, func(a, b segFile) int {
		if a.lo != b.lo {
			return cmp.Compare(a.lo, b.lo)
		}
		return strings.Compare(a.name, b.name)
	})
	return files, nil
}

// scanFile opens and scans one segment file.
func (s *Spool) scanFile(sf segFile, flag int, mode scanMode) (*os.File, int64, scanResult, error) {
	path := s.path(sf.name)
	f, err := os.OpenFile(path, flag, 0)
	if err != nil {
		return nil, 0, scanResult{}, fmt.Errorf("open segment: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, 0, scanResult{}, fmt.Errorf("stat segment: %w", err)
	}
	res, err := scanSegment(f, st.Size(), path, sf.lo, mode)
	if err != nil {
		f.Close()
		return nil, 0, res, err
	}
	return f, st.Size(), res, nil
}

// loadSealed checks a sealed segment's framing against its name.
func (s *Spool) loadSealed(sf segFile) (*segment, error) {
	f, size, res, err := s.scanFile(sf, os.O_RDONLY, scanSealed)
	if err != nil {
		return nil, err
	}
	f.Close()
	if res.hi != sf.hi {
		return nil, corruptf(s.path(sf.name), res.end, "segment name says it ends at position %d but its last transaction is %d", sf.hi, res.hi)
	}
	return &segment{lo: sf.lo, hi: sf.hi, name: sf.name, size: size, visible: size, sealed: true, index: res.index}, nil
}

// sealStray seals an active-named segment that is not the last: it was
// synced before the next segment was created, so it must be whole.
func (s *Spool) sealStray(sf segFile) (*segment, error) {
	f, size, res, err := s.scanFile(sf, os.O_RDONLY, scanFull)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if res.hi < sf.lo {
		return nil, corruptf(s.path(sf.name), segHeaderSize, "segment without transactions is followed by another")
	}
	if err := f.Sync(); err != nil {
		return nil, fmt.Errorf("sync segment %s: %w", sf.name, err)
	}
	name := sealedName(sf.lo, res.hi)
	if err := os.Rename(s.path(sf.name), s.path(name)); err != nil {
		return nil, fmt.Errorf("seal segment %s: %w", sf.name, err)
	}
	s.log.Warn("sealed a segment left active by a crash", "segment", name)
	return &segment{lo: sf.lo, hi: res.hi, name: name, size: size, visible: size, sealed: true, index: res.index}, nil
}

// openActive recovers the last segment and makes it the active one.
func (s *Spool) openActive(sf segFile) (*segment, error) {
	f, size, res, err := s.scanFile(sf, os.O_RDWR, scanTail)
	if err != nil {
		return nil, err
	}
	if res.end < size {
		s.log.Warn("cut off the unfinished tail of the spool left by a crash",
			"segment", sf.name, "offset", res.end, "bytes", size-res.end, "torn", res.torn >= 0)
		if err := f.Truncate(res.end); err != nil {
			f.Close()
			return nil, fmt.Errorf("cut segment %s: %w", sf.name, err)
		}
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return nil, fmt.Errorf("sync segment %s: %w", sf.name, err)
	}
	g := &segment{lo: sf.lo, hi: res.hi, name: sf.name, size: res.end, visible: res.end, index: res.index}
	s.w.f, s.w.seg = f, g
	s.w.size, s.w.synced, s.w.boundary, s.w.bpos = res.end, res.end, res.end, res.hi
	return g, nil
}

// startActive creates the active segment for positions from lo on, after
// segments totalling start bytes.
func (s *Spool) startActive(lo uint64, start int64) error {
	f, err := s.createSegment(lo)
	if err != nil {
		return err
	}
	g := &segment{lo: lo, hi: lo - 1, name: activeName(lo), start: start, size: segHeaderSize, visible: segHeaderSize}
	s.segs = append(s.segs, g)
	s.w.f, s.w.seg = f, g
	s.w.size, s.w.synced, s.w.boundary, s.w.bpos = segHeaderSize, segHeaderSize, segHeaderSize, lo-1
	return nil
}
