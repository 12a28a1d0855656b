package bench

import (
	"bufio"
	"encoding/xml"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
)

// Plot is the chart --plot writes: on the left the latency percentile
// curve of each series, on the right its throughput over time.
type Plot struct {
	Title string
	// LatencyName names the plotted latency (rtt, delivery, handshake).
	LatencyName string
	Series      []PlotSeries
}

// PlotSeries is one run on the chart: one line in each panel.
type PlotSeries struct {
	Name     string
	Latency  *Latency
	Timeline []Progress
}

// seriesOf is the plot series of a report: its main latency and timeline.
func seriesOf(name string, r *Report) PlotSeries {
	_, l := mainLatency(r)
	return PlotSeries{Name: name, Latency: l, Timeline: r.Timeline}
}

// plotOf is the plot of one report.
func plotOf(r *Report) *Plot {
	name, _ := mainLatency(r)
	return &Plot{
		Title:       fmt.Sprintf("%s against %s", r.Scenario, r.Target),
		LatencyName: name,
		Series:      []PlotSeries{seriesOf(r.Target, r)},
	}
}

// Chart geometry, in SVG user units.
const (
	plotWidth    = 1200
	plotHeight   = 560
	plotTop      = 110 // below title and legend
	plotBottom   = 480 // x axis
	leftX0       = 90
	leftX1       = 560
	rightX0      = 690
	rightX1      = 1160
	legendPerRow = 5
)

// palette is the Okabe-Ito set, told apart by most colour-blind readers,
// with its yellow left out (too pale on white).
func palette(i int) string {
	colors := []string{"#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000"}
	return colors[i%len(colors)]
}

// Percentiles of the latency panel: x is log10(1/(1-p)), from 50% to 99.99%.
const (
	curveXMin   = 0.30102999566398120 // log10(2): p50
	curveXMax   = 4                   // p99.99
	curveSteps  = 160
	minLatencyM = 0.001 // 1µs, the histogram's floor, in ms
)

// curve returns (x, latency in ms) points of l between p50 and p99.99.
func curve(l *Latency) [][2]float64 {
	if l == nil || l.Count == 0 {
		return nil
	}
	var pts [][2]float64
	if h, err := l.Snapshot.Histogram(); err == nil && l.Snapshot != nil && h.TotalCount() > 0 {
		for i := 0; i <= curveSteps; i++ {
			x := curveXMin + (curveXMax-curveXMin)*float64(i)/curveSteps
			p := 100 * (1 - math.Pow(10, -x))
			pts = append(pts, [2]float64{x, float64(h.ValueAtPercentile(p)) / 1e3})
		}
		return pts
	}
	for _, d := range l.Distribution {
		if d.Percentile < 50 || d.Percentile > 99.99+1e-9 {
			continue
		}
		pts = append(pts, [2]float64{-math.Log10(1 - d.Percentile/100), float64(d.Us) / 1e3})
	}
	return pts
}

// throughput returns (second, value) points of a timeline: messages
// received per second, or open connections when byConns.
func throughput(tl []Progress, byConns bool) [][2]float64 {
	pts := make([][2]float64, 0, len(tl))
	for _, p := range tl {
		v := float64(p.Received)
		if byConns {
			v = float64(p.Open)
		}
		pts = append(pts, [2]float64{float64(p.Sec), v})
	}
	return pts
}

// axis maps data values to chart coordinates, linearly or by log10.
type axis struct {
	lo, hi   float64 // data range (log10 of it when log)
	log      bool
	from, to float64 // chart coordinates of lo and hi
}

func (a axis) pos(v float64) float64 {
	if a.log {
		v = math.Log10(math.Max(v, minLatencyM))
	}
	if a.hi == a.lo {
		return a.from
	}
	return a.from + (v-a.lo)/(a.hi-a.lo)*(a.to-a.from)
}

// niceStep is a 1, 2 or 5 times a power of ten near span/n.
func niceStep(span float64, n int) float64 {
	if span <= 0 {
		return 1
	}
	raw := span / float64(n)
	mag := math.Pow(10, math.Floor(math.Log10(raw)))
	for _, m := range []float64{1, 2, 5, 10} {
		if raw <= m*mag {
			return m * mag
		}
	}
	return 10 * mag
}

// linearTicks returns ticks from 0 to at least hi, and the axis top.
func linearTicks(hi float64) ([]float64, float64) {
	if hi <= 0 {
		hi = 1
	}
	step := niceStep(hi, 5)
	top := math.Ceil(hi/step) * step
	var ticks []float64
	for v := 0.0; v <= top+step/2; v += step {
		ticks = append(ticks, math.Round(v/step)*step)
	}
	return ticks, top
}

// fmtTick renders a tick value at the precision of step.
func fmtTick(v, step float64) string {
	dec := 0
	if step < 1 {
		dec = int(math.Ceil(-math.Log10(step) - 1e-9))
	}
	return strconv.FormatFloat(v, 'f', dec, 64)
}

// svgWriter writes SVG, keeping the first error.
type svgWriter struct {
	w   *bufio.Writer
	err error
}

func (s *svgWriter) printf(format string, a ...any) {
	if s.err == nil {
		_, s.err = fmt.Fprintf(s.w, format, a...)
	}
}

// esc escapes text for an attribute or element.
func esc(t string) string {
	var b strings.Builder
	_ = xml.EscapeText(&b, []byte(t))
	return b.String()
}

func (s *svgWriter) text(x, y float64, anchor, extra, t string) {
	s.printf(`<text x="%.1f" y="%.1f" text-anchor="%s"%s>%s</text>`+"\n", x, y, anchor, extra, esc(t))
}

func (s *svgWriter) line(x1, y1, x2, y2 float64, stroke string) {
	s.printf(`<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s"/>`+"\n", x1, y1, x2, y2, stroke)
}

func (s *svgWriter) polyline(class, name, color string, xa, ya axis, pts [][2]float64) {
	var b strings.Builder
	for i, p := range pts {
		if i > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%.1f,%.1f", xa.pos(p[0]), ya.pos(p[1]))
	}
	s.printf(`<polyline class="%s" data-series="%s" fill="none" stroke="%s" stroke-width="2" stroke-linejoin="round" points="%s"><title>%s</title></polyline>`+"\n",
		class, esc(name), color, b.String(), esc(name))
}

// frame draws a panel's box, its title and its axis labels.
func (s *svgWriter) frame(x0, x1 float64, title, xlabel, ylabel string) {
	s.printf(`<rect x="%d" y="%d" width="%.1f" height="%d" fill="none" stroke="#444"/>`+"\n", int(x0), plotTop, x1-x0, plotBottom-plotTop)
	s.text((x0+x1)/2, plotTop-10, "middle", ` font-weight="bold"`, title)
	s.text((x0+x1)/2, plotBottom+42, "middle", "", xlabel)
	cy := float64(plotTop+plotBottom) / 2
	s.text(x0-62, cy, "middle", fmt.Sprintf(` transform="rotate(-90 %.1f %.1f)"`, x0-62, cy), ylabel)
}

// WriteSVG draws the plot as a standalone SVG document. Every series has
// exactly one polyline in each panel (empty when it has no data there).
func (p *Plot) WriteSVG(w io.Writer) error {
	s := &svgWriter{w: bufio.NewWriter(w)}
	s.printf(`<?xml version="1.0" encoding="UTF-8"?>` + "\n")
	s.printf(`<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="13">`+"\n",
		plotWidth, plotHeight, plotWidth, plotHeight)
	s.printf(`<rect width="%d" height="%d" fill="white"/>`+"\n", plotWidth, plotHeight)
	s.text(plotWidth/2, 26, "middle", ` font-size="17" font-weight="bold"`, p.Title)

	// Legend: one swatch and name per series, in rows under the title.
	s.printf(`<g class="legend">` + "\n")
	for i, sr := range p.Series {
		x := float64(leftX0 + (i%legendPerRow)*210)
		y := float64(50 + (i/legendPerRow)*18)
		s.printf(`<rect x="%.1f" y="%.1f" width="24" height="4" fill="%s"/>`+"\n", x, y-6, palette(i))
		s.text(x+30, y, "start", "", sr.Name)
	}
	s.printf("</g>\n")

	p.latencyPanel(s)
	p.throughputPanel(s)
	s.printf("</svg>\n")
	if s.err != nil {
		return s.err
	}
	return s.w.Flush()
}

func (p *Plot) latencyPanel(s *svgWriter) {
	curves := make([][][2]float64, len(p.Series))
	lo, hi := math.Inf(1), 0.0
	for i, sr := range p.Series {
		curves[i] = curve(sr.Latency)
		for _, pt := range curves[i] {
			lo, hi = math.Min(lo, math.Max(pt[1], minLatencyM)), math.Max(hi, pt[1])
		}
	}
	xa := axis{lo: curveXMin, hi: curveXMax, from: leftX0, to: leftX1}
	name := p.LatencyName
	if name == "" {
		name = "latency"
	}
	// Tails that span decades (a stalled server's p99.99 next to a fast
	// one's p50) would flatten a linear axis into its floor: go log there.
	useLog := hi > 0 && hi/lo > 50
	ylabel := name + " latency (ms)"
	var ya axis
	type tick struct {
		v     float64
		label string
	}
	var yticks []tick
	if useLog {
		a, b := math.Floor(math.Log10(lo)), math.Ceil(math.Log10(hi))
		ya = axis{lo: a, hi: b, log: true, from: plotBottom, to: plotTop}
		for e := a; e <= b; e++ {
			v := math.Pow(10, e)
			yticks = append(yticks, tick{v, strconv.FormatFloat(v, 'f', int(math.Max(0, -e)), 64)})
		}
		ylabel += ", log scale"
	} else {
		ticks, top := linearTicks(hi)
		ya = axis{lo: 0, hi: top, from: plotBottom, to: plotTop}
		step := top / float64(max(1, len(ticks)-1))
		for _, v := range ticks {
			yticks = append(yticks, tick{v, fmtTick(v, step)})
		}
	}
	s.printf(`<g class="panel" id="latency">` + "\n")
	s.frame(leftX0, leftX1, name+" latency by percentile", "percentile", ylabel)
	for _, t := range yticks {
		y := ya.pos(t.v)
		s.line(leftX0, y, leftX1, y, "#e4e4e4")
		s.text(leftX0-6, y+4, "end", "", t.label)
	}
	for _, pc := range []struct {
		p     float64
		label string
	}{{50, "50%"}, {90, "90%"}, {99, "99%"}, {99.9, "99.9%"}, {99.99, "99.99%"}} {
		x := xa.pos(-math.Log10(1 - pc.p/100))
		s.line(x, plotTop, x, plotBottom, "#e4e4e4")
		s.text(x, plotBottom+18, "middle", "", pc.label)
	}
	for i, sr := range p.Series {
		s.polyline("latency", sr.Name, palette(i), xa, ya, curves[i])
	}
	s.printf("</g>\n")
}

func (p *Plot) throughputPanel(s *svgWriter) {
	// A run that sends nothing (connect) is shown by its open connections.
	byConns := true
	for _, sr := range p.Series {
		for _, pt := range sr.Timeline {
			if pt.Received > 0 {
				byConns = false
			}
		}
	}
	lines := make([][][2]float64, len(p.Series))
	maxX, maxY := 1.0, 0.0
	for i, sr := range p.Series {
		lines[i] = throughput(sr.Timeline, byConns)
		for _, pt := range lines[i] {
			maxX, maxY = math.Max(maxX, pt[0]), math.Max(maxY, pt[1])
		}
	}
	xticks, xtop := linearTicks(maxX)
	yticks, ytop := linearTicks(maxY)
	xa := axis{lo: 0, hi: xtop, from: rightX0, to: rightX1}
	ya := axis{lo: 0, hi: ytop, from: plotBottom, to: plotTop}
	title, ylabel := "throughput over time", "messages received per second"
	if byConns {
		title, ylabel = "connections over time", "open connections"
	}
	s.printf(`<g class="panel" id="throughput">` + "\n")
	s.frame(rightX0, rightX1, title, "time (s)", ylabel)
	for _, v := range yticks {
		y := ya.pos(v)
		s.line(rightX0, y, rightX1, y, "#e4e4e4")
		label := fmtTick(v, ytop/float64(max(1, len(yticks)-1)))
		if v >= 10e3 {
			label = fmtCount(v)
		}
		s.text(rightX0-6, y+4, "end", "", label)
	}
	xstep := xtop / float64(max(1, len(xticks)-1))
	for _, v := range xticks {
		x := xa.pos(v)
		s.line(x, plotTop, x, plotBottom, "#e4e4e4")
		s.text(x, plotBottom+18, "middle", "", fmtTick(v, xstep))
	}
	for i, sr := range p.Series {
		s.polyline("throughput", sr.Name, palette(i), xa, ya, lines[i])
	}
	s.printf("</g>\n")
}
