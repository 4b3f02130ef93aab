package main

import (
	"sort"
	"strings"

	"github.com/schedsync/schedsync/internal/config"
)

// suggestKeys returns the known keys that an unknown key was probably meant
// to be: a small edit away (spool.max_backlg), or the same name under
// another section (sync.max_backlog), at most three, closest first.
func suggestKeys(unknown string) []string {
	leaf := unknown[strings.LastIndex(unknown, ".")+1:]
	var names []string
	for _, k := range config.Keys() {
		names = append(names, k.Name)
	}
	return nearest(unknown, names, max(2, len(unknown)/5), func(name string) bool {
		return leaf != "" && name[strings.LastIndex(name, ".")+1:] == leaf
	})
}

// nearest returns at most three of names, closest to unknown first: those
// within limit edits of it, and those also says to keep (nil: none).
func nearest(unknown string, names []string, limit int, also func(name string) bool) []string {
	type cand struct {
		name string
		dist int
	}
	var cands []cand
	for _, n := range names {
		keep := also != nil && also(n)
		// The distance is at least the difference in length: skip the
		// quadratic work for names that cannot be within limit.
		if !keep && abs(len(unknown)-len(n)) > limit {
			continue
		}
		if d := editDistance(unknown, n); d <= limit || keep {
			cands = append(cands, cand{n, d})
		}
	}
	sort.SliceStable(cands, func(i, j int) bool { return cands[i].dist < cands[j].dist })
	var out []string
	for i := 0; i < len(cands) && i < 3; i++ {
		out = append(out, cands[i].name)
	}
	return out
}

// didYouMean is "; did you mean A or B?" for suggestions, else otherwise.
func didYouMean(suggestions []string, otherwise string) string {
	if len(suggestions) == 0 {
		return otherwise
	}
	return "; did you mean " + orJoin(suggestions) + "?"
}

// editDistance is the Levenshtein distance between a and b.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// orJoin writes "a", "a or b", "a, b or c".
func orJoin(items []string) string {
	if len(items) < 2 {
		return strings.Join(items, "")
	}
	return strings.Join(items[:len(items)-1], ", ") + " or " + items[len(items)-1]
}

func abs(n int) int {
	if n < 0 {
		return -n
	}
	return n
}
