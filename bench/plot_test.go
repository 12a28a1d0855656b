package bench

import (
	"bytes"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// svgPanel is what a test reads of one panel of a plot.
type svgPanel struct {
	ID        string    `xml:"id,attr"`
	Polylines []svgLine `xml:"polyline"`
	Texts     []string  `xml:"text"`
}

type svgLine struct {
	Class  string `xml:"class,attr"`
	Series string `xml:"data-series,attr"`
	Stroke string `xml:"stroke,attr"`
	Points string `xml:"points,attr"`
}

type svgDoc struct {
	XMLName xml.Name   `xml:"svg"`
	Texts   []string   `xml:"text"`
	Groups  []svgPanel `xml:"g"`
}

func parseSVG(t testing.TB, b []byte) *svgDoc {
	t.Helper()
	var doc svgDoc
	if err := xml.Unmarshal(b, &doc); err != nil {
		t.Fatalf("not XML: %v\n%s", err, b)
	}
	// Well-formed to the end, not only as far as Unmarshal looked.
	dec := xml.NewDecoder(bytes.NewReader(b))
	for {
		if _, err := dec.Token(); err != nil {
			if !errors.Is(err, io.EOF) {
				t.Fatalf("not XML: %v", err)
			}
			break
		}
	}
	return &doc
}

func TestPlotSVG(t *testing.T) {
	fast, slow := sampleReport(), sampleReport()
	h := NewHistogram()
	for v := int64(1000); v < 900_000; v += 500 {
		_ = h.RecordValue(v)
	}
	slow.Latency = map[string]*Latency{"rtt": Summarize(h)}
	slow.Timeline = []Progress{{Sec: 1, Received: 10}, {Sec: 2, Received: 40}, {Sec: 3, Received: 30}}
	p := &Plot{Title: "compare echo <&>", LatencyName: "rtt", Series: []PlotSeries{
		seriesOf("shoal", fast),
		seriesOf("gorilla & co", slow),
		{Name: "empty"},
	}}
	var b bytes.Buffer
	if err := p.WriteSVG(&b); err != nil {
		t.Fatal(err)
	}
	doc := parseSVG(t, b.Bytes())
	if len(doc.Texts) == 0 || doc.Texts[0] != "compare echo <&>" {
		t.Errorf("title %q", doc.Texts)
	}
	panels := map[string]svgPanel{}
	for _, g := range doc.Groups {
		panels[g.ID] = g
	}
	for _, id := range []string{"latency", "throughput"} {
		g, ok := panels[id]
		if !ok {
			t.Fatalf("no %s panel", id)
		}
		if len(g.Polylines) != len(p.Series) {
			t.Fatalf("%s panel: %d polylines for %d series", id, len(g.Polylines), len(p.Series))
		}
		colors := map[string]bool{}
		for i, l := range g.Polylines {
			if l.Series != p.Series[i].Name || l.Class != id {
				t.Errorf("%s polyline %d: series %q class %q", id, i, l.Series, l.Class)
			}
			colors[l.Stroke] = true
			n := len(strings.Fields(l.Points))
			if (i < 2) != (n > 0) {
				t.Errorf("%s polyline of %q has %d points", id, l.Series, n)
			}
		}
		if len(colors) != len(p.Series) {
			t.Errorf("%s panel: colors %v not distinct", id, colors)
		}
	}
	lat := strings.Join(panels["latency"].Texts, "|")
	for _, want := range []string{"percentile", "rtt latency (ms), log scale", "99.99%", "50%"} {
		if !strings.Contains(lat, want) {
			t.Errorf("latency panel lacks %q: %s", want, lat)
		}
	}
	thr := strings.Join(panels["throughput"].Texts, "|")
	for _, want := range []string{"time (s)", "messages received per second"} {
		if !strings.Contains(thr, want) {
			t.Errorf("throughput panel lacks %q: %s", want, thr)
		}
	}
	// The throughput line rises to its peak at second 2, the panel's top.
	pts := strings.Fields(panels["throughput"].Polylines[1].Points)
	if len(pts) != 3 {
		t.Fatalf("throughput points %q", pts)
	}
	if !(yOf(t, pts[1]) < yOf(t, pts[2]) && yOf(t, pts[2]) < yOf(t, pts[0])) {
		t.Errorf("throughput points %q do not follow 10, 40, 30", pts)
	}
	// The latency curves never fall as the percentile rises.
	for _, l := range panels["latency"].Polylines[:2] {
		prev := 1e9
		for _, pt := range strings.Fields(l.Points) {
			if y := yOf(t, pt); y > prev+0.01 {
				t.Errorf("%s latency curve falls at %s", l.Series, pt)
			} else {
				prev = y
			}
		}
	}
}

func yOf(t testing.TB, pt string) float64 {
	t.Helper()
	var x, y float64
	if _, err := fmt.Sscanf(pt, "%f,%f", &x, &y); err != nil {
		t.Fatalf("point %q: %v", pt, err)
	}
	return y
}

// TestScenarioPlotFlag runs a single scenario with --plot against an
// in-test shoal.
func TestScenarioPlotFlag(t *testing.T) {
	addr := startShoal(t)
	path := filepath.Join(t.TempDir(), "echo.svg")
	runBench(t, "echo", "--url", "ws://"+addr+"/ws/echo", "--conns", "10", "--rate", "500",
		"--msg-rate", "100", "--duration", "1200ms", "--plot", path)
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	doc := parseSVG(t, b)
	var lines int
	for _, g := range doc.Groups {
		for _, l := range g.Polylines {
			lines++
			if l.Series != "ws://"+addr+"/ws/echo" || l.Points == "" {
				t.Errorf("%s polyline: series %q, %d chars of points", g.ID, l.Series, len(l.Points))
			}
		}
	}
	if lines != 2 {
		t.Errorf("%d polylines, want one per panel", lines)
	}
}
