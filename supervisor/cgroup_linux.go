//go:build linux

package supervisor

import (
	"bufio"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// cgroupMount is a mounted cgroup hierarchy that limits CPU.
type cgroupMount struct {
	v2         bool
	root       string // the hierarchy's directory that is mounted
	mountpoint string
}

// cgroupQuota returns the CPU bandwidth limit, in CPUs, of the process
// whose /proc and /sys are under fsRoot ("/" for this one; tests give a
// directory of their own), and the file it was read from. The limit is
// the smallest along the process's cgroup path up to the hierarchy's
// root, since every ancestor's limit applies too; under a hybrid layout
// both the v1 cpu controller and the v2 hierarchy are read. 0 means no
// limit.
func cgroupQuota(fsRoot string) (float64, string, error) {
	mounts, err := cgroupMounts(filepath.Join(fsRoot, "proc/self/mountinfo"))
	if err != nil {
		return 0, "", err
	}
	paths, err := cgroupPaths(filepath.Join(fsRoot, "proc/self/cgroup"))
	if err != nil {
		return 0, "", err
	}
	best, from := 0.0, ""
	for _, m := range mounts {
		p, ok := paths.v1cpu, paths.v1cpu != ""
		if m.v2 {
			p, ok = paths.v2, paths.hasV2
		}
		if !ok {
			continue
		}
		// The path is relative to the hierarchy's root; a cgroup namespace
		// mounts the process's own cgroup as the root.
		rel, found := strings.CutPrefix(p, m.root)
		if !found {
			rel = p
		}
		top := filepath.Join(fsRoot, m.mountpoint)
		for dir := filepath.Join(top, rel); ; dir = filepath.Dir(dir) {
			q, file := readQuota(dir, m.v2)
			if q > 0 && (best == 0 || q < best) {
				best, from = q, strings.TrimPrefix(file, filepath.Clean(fsRoot))
				if !strings.HasPrefix(from, "/") {
					from = "/" + from
				}
			}
			if dir == top || len(dir) <= len(top) {
				break
			}
		}
	}
	return best, from, nil
}

// readQuota reads one cgroup directory's CPU limit in CPUs, 0 for none.
func readQuota(dir string, v2 bool) (float64, string) {
	if v2 {
		file := filepath.Join(dir, "cpu.max")
		b, err := os.ReadFile(file)
		if err != nil {
			return 0, ""
		}
		f := strings.Fields(string(b))
		if len(f) != 2 || f[0] == "max" {
			return 0, ""
		}
		return ratio(f[0], f[1]), file
	}
	file := filepath.Join(dir, "cpu.cfs_quota_us")
	q, err := os.ReadFile(file)
	if err != nil {
		return 0, ""
	}
	p, err := os.ReadFile(filepath.Join(dir, "cpu.cfs_period_us"))
	if err != nil {
		return 0, ""
	}
	return ratio(strings.TrimSpace(string(q)), strings.TrimSpace(string(p))), file
}

// ratio is quota over period, 0 for a quota of -1 (none) or bad numbers.
func ratio(quota, period string) float64 {
	q, err1 := strconv.ParseInt(quota, 10, 64)
	p, err2 := strconv.ParseInt(period, 10, 64)
	if err1 != nil || err2 != nil || q <= 0 || p <= 0 {
		return 0
	}
	return float64(q) / float64(p)
}

// procCgroups are the process's cgroup paths that matter for CPU.
type procCgroups struct {
	v2    string
	hasV2 bool
	v1cpu string
}

// cgroupPaths reads /proc/self/cgroup: "0::/path" for v2, and
// "N:cpu,cpuacct:/path" for the v1 controller named cpu.
func cgroupPaths(file string) (procCgroups, error) {
	var pc procCgroups
	f, err := os.Open(file)
	if err != nil {
		return pc, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		parts := strings.SplitN(sc.Text(), ":", 3)
		if len(parts) != 3 {
			continue
		}
		switch {
		case parts[0] == "0" && parts[1] == "":
			pc.v2, pc.hasV2 = parts[2], true
		case slices.Contains(strings.Split(parts[1], ","), "cpu"):
			pc.v1cpu = parts[2]
		}
	}
	return pc, sc.Err()
}

// cgroupMounts reads the cgroup v2 mount and the v1 cpu controller's mount
// from a mountinfo file.
func cgroupMounts(file string) ([]cgroupMount, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []cgroupMount
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		// id parent major:minor root mountpoint options [optional...] - fstype source superoptions
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		if !ok {
			continue
		}
		fields, tail := strings.Fields(pre), strings.Fields(post)
		if len(fields) < 5 || len(tail) < 1 {
			continue
		}
		m := cgroupMount{root: unescapeMount(fields[3]), mountpoint: unescapeMount(fields[4])}
		switch tail[0] {
		case "cgroup2":
			m.v2 = true
		case "cgroup":
			if len(tail) < 3 || !slices.Contains(strings.Split(tail[2], ","), "cpu") {
				continue
			}
		default:
			continue
		}
		out = append(out, m)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(out) == 0 {
		return nil, errNoCgroup
	}
	return out, nil
}

var errNoCgroup = errors.New("supervisor: no cgroup CPU controller mounted")

// unescapeMount undoes mountinfo's octal escapes (\040 for a space).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
