package main

import (
	"fmt"
	"os"
	"runtime/pprof"
	"strconv"
	"strings"
)

// profileEnv names a file the service writes a CPU profile to, from start
// until it stops: for measuring (bench/), not for production. "{pid}" in
// it stands for the service's pid, to tell a master from a slave. (Not a
// config key: the loader reads only the SCHEDSYNC_* variables of
// config.Keys.)
const profileEnv = "SCHEDSYNC_CPUPROFILE"

// startProfile starts the CPU profile profileEnv asks for; the returned
// function stops it.
func startProfile() (func(), error) {
	path := os.Getenv(profileEnv)
	if path == "" {
		return func() {}, nil
	}
	f, err := os.Create(strings.ReplaceAll(path, "{pid}", strconv.Itoa(os.Getpid())))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", profileEnv, err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %w", profileEnv, err)
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}, nil
}
