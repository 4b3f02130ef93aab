package main

import (
	"fmt"
	"image/color"
	"os"
	"path/filepath"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
)

// colors of the systems in the plot.
var colors = map[string]color.RGBA{
	"schedsync-trigger": {R: 0xd6, G: 0x60, B: 0x1a, A: 0xff},
	"schedsync-logical": {R: 0x1f, G: 0x77, B: 0xb4, A: 0xff},
	"native":            {R: 0x55, G: 0x55, B: 0x55, A: 0xff},
}

// plotLag draws every probe's lag against the time it was sent, one
// line per system and round, and saves it as a PNG.
func plotLag(path string, runs []lagMode) error {
	p := plot.New()
	p.Title.Text = "Lag at 1,000 tx/s: commit on the master → NOTIFY from the slave"
	p.X.Label.Text = "time since pgbench started (s)"
	p.Y.Label.Text = "lag (ms)"
	p.Y.Min = 0
	seen := map[string]int{}
	for _, m := range runs {
		if len(m.Lag.Samples) == 0 || len(m.Lag.SentAt) != len(m.Lag.Samples) {
			continue
		}
		pts := make(plotter.XYs, len(m.Lag.Samples))
		for i := range pts {
			pts[i].X = m.Lag.SentAt[i].Seconds()
			pts[i].Y = float64(m.Lag.Samples[i]) / 1e6
		}
		line, err := plotter.NewLine(pts)
		if err != nil {
			return err
		}
		line.Color = colors[m.Mode]
		line.Width = vg.Points(0.8)
		seen[m.Mode]++
		if seen[m.Mode] == 1 {
			p.Legend.Add(m.Mode, line)
		}
		p.Add(line)
	}
	p.Legend.Top = true
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	if err := p.Save(10*vg.Inch, 4*vg.Inch, path); err != nil {
		return fmt.Errorf("save the lag plot: %w", err)
	}
	return nil
}
