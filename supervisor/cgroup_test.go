package supervisor

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// fakeFS writes files under a temporary root, as /proc and /sys would hold them.
func fakeFS(t *testing.T, files map[string]string) string {
	t.Helper()
	root := t.TempDir()
	for name, body := range files {
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

const (
	mountsV2 = "30 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n"
	// A hybrid layout: v1 controllers, the cpu one shared with cpuacct,
	// and a v2 hierarchy beside them.
	mountsHybrid = "31 23 0:28 / /sys/fs/cgroup rw - tmpfs tmpfs rw,mode=755\n" +
		"32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct\n" +
		"35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n" +
		"41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n"
)

func TestCgroupQuota(t *testing.T) {
	for _, c := range []struct {
		name  string
		files map[string]string
		want  float64
		from  string
	}{
		{"v2 limit on the process's cgroup", map[string]string{
			"proc/self/mountinfo":                              mountsV2,
			"proc/self/cgroup":                                 "0::/system.slice/shoal.service\n",
			"sys/fs/cgroup/cpu.max":                            "max 100000\n",
			"sys/fs/cgroup/system.slice/cpu.max":               "max 100000\n",
			"sys/fs/cgroup/system.slice/shoal.service/cpu.max": "150000 100000\n",
		}, 1.5, "/sys/fs/cgroup/system.slice/shoal.service/cpu.max"},
		{"v2 limit on an ancestor is the tighter one", map[string]string{
			"proc/self/mountinfo":                     mountsV2,
			"proc/self/cgroup":                        "0::/kubepods/pod1/ctr\n",
			"sys/fs/cgroup/kubepods/pod1/cpu.max":     "50000 100000\n",
			"sys/fs/cgroup/kubepods/pod1/ctr/cpu.max": "400000 100000\n",
		}, 0.5, "/sys/fs/cgroup/kubepods/pod1/cpu.max"},
		{"v2 without a limit", map[string]string{
			"proc/self/mountinfo":   mountsV2,
			"proc/self/cgroup":      "0::/\n",
			"sys/fs/cgroup/cpu.max": "max 100000\n",
		}, 0, ""},
		{"cgroup namespace: the process's cgroup is the mount's root", map[string]string{
			"proc/self/mountinfo":   "30 23 0:26 /docker/abc /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n",
			"proc/self/cgroup":      "0::/docker/abc\n",
			"sys/fs/cgroup/cpu.max": "200000 100000\n",
		}, 2, "/sys/fs/cgroup/cpu.max"},
		{"v1 quota", map[string]string{
			"proc/self/mountinfo":                           mountsHybrid,
			"proc/self/cgroup":                              "4:memory:/x\n2:cpu,cpuacct:/x\n0::/\n",
			"sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us":    "-1\n",
			"sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us":   "100000\n",
			"sys/fs/cgroup/cpu,cpuacct/x/cpu.cfs_quota_us":  "300000\n",
			"sys/fs/cgroup/cpu,cpuacct/x/cpu.cfs_period_us": "100000\n",
		}, 3, "/sys/fs/cgroup/cpu,cpuacct/x/cpu.cfs_quota_us"},
		{"v1 without a quota", map[string]string{
			"proc/self/mountinfo":                         mountsHybrid,
			"proc/self/cgroup":                            "2:cpu,cpuacct:/\n0::/\n",
			"sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us":  "-1\n",
			"sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us": "100000\n",
		}, 0, ""},
		{"a mount point with a space", map[string]string{
			"proc/self/mountinfo":        `30 23 0:26 / /sys/fs/my\040cgroup rw - cgroup2 cgroup2 rw` + "\n",
			"proc/self/cgroup":           "0::/a\n",
			"sys/fs/my cgroup/a/cpu.max": "100000 100000\n",
		}, 1, "/sys/fs/my cgroup/a/cpu.max"},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, from, err := cgroupQuota(fakeFS(t, c.files))
			if err != nil {
				t.Fatal(err)
			}
			if got != c.want || from != c.from {
				t.Errorf("quota %v from %q, want %v from %q", got, from, c.want, c.from)
			}
		})
	}
	if _, _, err := cgroupQuota(fakeFS(t, map[string]string{"proc/self/mountinfo": "", "proc/self/cgroup": "0::/\n"})); err == nil {
		t.Error("no cgroup mounted: want an error")
	}
}

func TestWorkersPerCPU(t *testing.T) {
	for _, c := range []struct {
		cpus CPUs
		want int
	}{
		{CPUs{Affinity: 8}, 8},
		{CPUs{Affinity: 8, Quota: 2}, 2},
		{CPUs{Affinity: 8, Quota: 2.5}, 3},
		{CPUs{Affinity: 8, Quota: 0.5}, 1},
		{CPUs{Affinity: 2, Quota: 16}, 2},
		{CPUs{Affinity: 0}, 1},
	} {
		if got := c.cpus.Workers(); got != c.want {
			t.Errorf("%+v: %d workers, want %d", c.cpus, got, c.want)
		}
	}
}

// On this machine: whatever the cgroups say, the count is within the CPUs.
func TestAvailableCPUs(t *testing.T) {
	c := AvailableCPUs()
	if n := c.Workers(); n < 1 || n > c.Affinity {
		t.Errorf("%v: %d workers", c, n)
	}
	t.Logf("%v: %d workers", c, c.Workers())
}

// printCPUsEnv makes the test binary print AvailableCPUs and exit, run by
// TestWorkersUnderARealCPUQuota inside a cgroup of its own.
const printCPUsEnv = "SHOAL_TEST_PRINT_CPUS"

func TestMain(m *testing.M) {
	if os.Getenv(printCPUsEnv) != "" {
		c := AvailableCPUs()
		fmt.Printf("workers=%d quota=%v\n", c.Workers(), c.Quota)
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// A process in a real cgroup whose CPU quota is one CPU gets one worker,
// however many CPUs the machine has.
func TestWorkersUnderARealCPUQuota(t *testing.T) {
	dir := cpuCgroup(t, 1)
	// The shell moves itself into the cgroup, then becomes the test binary.
	cmd := exec.Command("sh", "-c", `echo $$ > "$0/cgroup.procs" && exec "$@"`, dir, os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), printCPUsEnv+"=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	if got := strings.TrimSpace(string(out)); got != "workers=1 quota=1" {
		t.Errorf("in a cgroup of one CPU: %q, want workers=1 quota=1", got)
	}
}

// cpuCgroup makes a cgroup with a CPU quota of cpus under this process's
// CPU controller (v1 or v2), removed when the test ends. It skips the test
// where no CPU controller can be written (no root, or a read-only
// /sys/fs/cgroup); TestCgroupQuota covers the reading of limits anywhere.
func cpuCgroup(t *testing.T, cpus int) string {
	t.Helper()
	mounts, err := cgroupMounts("/proc/self/mountinfo")
	if err != nil {
		t.Skipf("no cgroup CPU controller: %v", err)
	}
	paths, err := cgroupPaths("/proc/self/cgroup")
	if err != nil {
		t.Skipf("cgroup of this process: %v", err)
	}
	for _, m := range mounts {
		parent := filepath.Join(m.mountpoint, strings.TrimPrefix(paths.v1cpu, m.root))
		if m.v2 {
			parent = filepath.Join(m.mountpoint, strings.TrimPrefix(paths.v2, m.root))
			ctl, err := os.ReadFile(filepath.Join(parent, "cgroup.subtree_control"))
			if err != nil || !slices.Contains(strings.Fields(string(ctl)), "cpu") {
				continue
			}
		}
		dir := filepath.Join(parent, fmt.Sprintf("shoal-test-%d", os.Getpid()))
		if err := os.Mkdir(dir, 0o755); err != nil {
			continue
		}
		t.Cleanup(func() {
			if err := os.Remove(dir); err != nil {
				t.Errorf("remove cgroup: %v", err)
			}
		})
		quota := fmt.Sprint(cpus * 100000)
		if m.v2 {
			err = os.WriteFile(filepath.Join(dir, "cpu.max"), []byte(quota+" 100000"), 0o644)
		} else if err = os.WriteFile(filepath.Join(dir, "cpu.cfs_period_us"), []byte("100000"), 0o644); err == nil {
			err = os.WriteFile(filepath.Join(dir, "cpu.cfs_quota_us"), []byte(quota), 0o644)
		}
		if err != nil {
			t.Fatalf("set the quota of %s: %v", dir, err)
		}
		return dir
	}
	t.Skip("no writable cgroup CPU controller")
	return ""
}
