package main

import (
	"fmt"
	"image/color"
	"slices"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
)

var palette = map[string]color.Color{
	"ketch":        color.RGBA{R: 0xd6, G: 0x27, B: 0x28, A: 0xff},
	"hashicorp":    color.RGBA{R: 0x1f, G: 0x77, B: 0xb4, A: 0xff},
	"ketch-remote": color.RGBA{R: 0xff, G: 0x7f, B: 0x0e, A: 0xff},
	"dragonboat":   color.RGBA{R: 0x2c, G: 0xa0, B: 0x2c, A: 0xff},
	"etcdraft":     color.RGBA{R: 0x94, G: 0x67, B: 0xbd, A: 0xff},
}

// plotResults draws latency (p50 solid, p99 dashed, log scale) against
// throughput, one colour per system, each point labelled with its client
// count, and writes it as a PNG.
func plotResults(results []Result, path string) error {
	p := plot.New()
	p.Title.Text = "latency against throughput (3 nodes, fsync, 16 B keys, 128 B values)"
	p.X.Label.Text = "throughput (ops/s)"
	p.Y.Label.Text = "latency (ms, log scale)"
	p.Y.Scale = plot.LogScale{}
	p.Y.Tick.Marker = plot.LogTicks{Prec: -1}
	p.X.Min = 0
	p.Legend.Top = true
	p.Legend.Left = true
	p.Add(plotter.NewGrid())

	lo, hi := 1e300, 0.0
	for _, r := range results {
		lo, hi = min(lo, r.P50us/1e3), max(hi, r.P99us/1e3)
	}
	if hi > 0 {
		p.Y.Min, p.Y.Max = max(lo/1.5, 1e-3), hi*1.5
	}
	bySystem := map[string][]Result{}
	var order []string
	for _, r := range results {
		if _, ok := bySystem[r.System]; !ok {
			order = append(order, r.System)
		}
		bySystem[r.System] = append(bySystem[r.System], r)
	}
	for _, name := range order {
		rs := bySystem[name]
		slices.SortFunc(rs, func(a, b Result) int { return a.Clients - b.Clients })
		col := palette[name]
		if col == nil {
			col = color.Black
		}
		for _, q := range []struct {
			label string
			get   func(Result) float64
			dash  []vg.Length
			shape draw.GlyphDrawer
		}{
			{"p50", func(r Result) float64 { return r.P50us / 1e3 }, nil, draw.CircleGlyph{}},
			{"p99", func(r Result) float64 { return r.P99us / 1e3 }, []vg.Length{vg.Points(4), vg.Points(3)}, draw.TriangleGlyph{}},
		} {
			xys := make(plotter.XYs, len(rs))
			labels := make([]string, len(rs))
			for i, r := range rs {
				xys[i] = plotter.XY{X: r.OpsPerSec, Y: max(q.get(r), 1e-3)}
				labels[i] = fmt.Sprintf("N=%d", r.Clients)
			}
			line, points, err := plotter.NewLinePoints(xys)
			if err != nil {
				return err
			}
			line.Color, line.Width, line.Dashes = col, vg.Points(1.5), q.dash
			points.Color, points.Shape = col, q.shape
			p.Add(line, points)
			p.Legend.Add(name+" "+q.label, line, points)
			if q.label == "p50" {
				l, err := plotter.NewLabels(plotter.XYLabels{XYs: xys, Labels: labels})
				if err != nil {
					return err
				}
				for i := range l.TextStyle {
					l.TextStyle[i].Color = col
					l.TextStyle[i].XAlign = draw.XLeft
					l.TextStyle[i].YAlign = draw.YTop
				}
				l.Offset = vg.Point{X: vg.Points(3), Y: vg.Points(-3)}
				p.Add(l)
			}
		}
	}
	return p.Save(9*vg.Inch, 6*vg.Inch, path)
}
