// Package fsutil holds the file-system disciplines that make a write
// durable, once for every package: an fsync of a directory after files in
// it were created, renamed or removed, and the replacement of a whole file
// by rename (temporary file, fsync, close, rename, fsync of the directory),
// so that a crash leaves either the old file or the new one, never a part.
// It knows nothing of what the files hold.
package fsutil

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
)

// SyncDir makes the creation, renaming and removal of files in dir durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync directory: %w", err)
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	return nil
}

// TmpSuffix ends the name of an AtomicFile until Commit: a file with it
// is what a crash left of a write that did not finish.
const TmpSuffix = ".tmp"

// AtomicFile is a file written under a temporary name (its path with
// TmpSuffix) and put in place by Commit. Until then, path is untouched.
type AtomicFile struct {
	*os.File
	path string
}

// CreateAtomic creates path's temporary file with mode perm, replacing a
// temporary file a crash left.
func CreateAtomic(path string, perm os.FileMode) (*AtomicFile, error) {
	f, err := os.OpenFile(path+TmpSuffix, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, perm)
	if err != nil {
		return nil, err
	}
	return &AtomicFile{File: f, path: path}, nil
}

// Commit makes what was written durable and puts it at path: fsync,
// close, rename, fsync of the directory. On failure the temporary file is
// removed and path is left as it was, or replaced whole.
func (a *AtomicFile) Commit() error {
	err := a.Sync()
	if cerr := a.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(a.Name(), a.path)
	}
	if err != nil {
		os.Remove(a.Name())
		return fmt.Errorf("write %s: %w", a.path, err)
	}
	return SyncDir(filepath.Dir(a.path))
}

// Abort closes and removes the temporary file; path is untouched.
func (a *AtomicFile) Abort() {
	a.Close()
	os.Remove(a.Name())
}

// WriteFileAtomic replaces path with data, durably and whole.
func WriteFileAtomic(path string, data []byte, perm os.FileMode) error {
	a, err := CreateAtomic(path, perm)
	if err != nil {
		return err
	}
	if _, err := a.Write(data); err != nil {
		a.Abort()
		return fmt.Errorf("write %s: %w", path, err)
	}
	return a.Commit()
}

// WriteJSONAtomic replaces path with v as indented JSON and a newline,
// durably and whole: the small state files an operator may read.
func WriteJSONAtomic(path string, v any, perm os.FileMode) error {
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return WriteFileAtomic(path, append(data, '\n'), perm)
}
