package main

import (
	"bytes"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/BurntSushi/toml"
)

// A command's settings come in layers: the command line wins over the
// environment, which wins over the config file, which wins over the
// default. Every layer is applied through flag.FlagSet.Set, so a value
// from the environment or the file is parsed and checked exactly like the
// same value on the command line, and fs.Visit sees it as set (serve
// forwards what is set to its workers).

// The config file is TOML. Top-level keys are the flags of `shoal serve`;
// a [service.NAME] table holds the flags of `shoal service NAME`:
//
//	addr = "0.0.0.0:8080"
//	services = ["echo", "chat=3"]
//	max-queue = "4MiB"
//
//	[service.chat]
//	history = 200

// configFile is a parsed config file: the top-level table, and the
// service tables by name.
type configFile struct {
	path     string
	top      map[string]any
	services map[string]map[string]any
}

// configEnv names the environment variable that points at a config file
// when --config is not given.
const configEnv = "SHOAL_CONFIG"

// unlayered flags choose what to do, not how: they never come from the
// environment or a file.
var unlayered = map[string]bool{"config": true, "print-config": true}

// secret flags are printed by --print-config only as whether they are set.
var secret = map[string]bool{"admin-token": true}

func loadConfigFile(path string) (*configFile, error) {
	var raw map[string]any
	if _, err := toml.DecodeFile(path, &raw); err != nil {
		return nil, usageError("config %s: %v", path, err)
	}
	cf := &configFile{path: path, top: make(map[string]any), services: make(map[string]map[string]any)}
	for k, v := range raw {
		if k != "service" {
			cf.top[k] = v
			continue
		}
		tables, ok := v.(map[string]any)
		if !ok {
			return nil, usageError("config %s: service: want tables such as [service.chat]", path)
		}
		for name, t := range tables {
			tab, ok := t.(map[string]any)
			if !ok {
				return nil, usageError("config %s: service.%s: want a table [service.%s]", path, name, name)
			}
			cf.services[name] = tab
		}
	}
	return cf, nil
}

// flagSource says where each flag of a command got its value.
type flagSource map[string]string

// layer fills the flags of fs not given on the command line from the
// environment (envPrefix + the flag name in upper case, dashes as
// underscores) and then from table, a config file's table for this
// command (nil: none). what names the table in errors.
func layer(fs *flag.FlagSet, envPrefix string, env []string, table map[string]any, what string) (flagSource, error) {
	src := make(flagSource)
	fs.Visit(func(f *flag.Flag) { src[f.Name] = "command line" })
	vars := make(map[string]string)
	for _, kv := range env {
		if k, v, ok := strings.Cut(kv, "="); ok && strings.HasPrefix(k, envPrefix) {
			vars[k] = v
		}
	}
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		if err != nil || src[f.Name] != "" || unlayered[f.Name] {
			return
		}
		name := envName(envPrefix, f.Name)
		if v, ok := vars[name]; ok {
			if e := fs.Set(f.Name, v); e != nil {
				err = usageError("%s=%q: %v", name, v, e)
				return
			}
			src[f.Name] = "env " + name
		}
	})
	if err != nil {
		return nil, err
	}
	keys := make([]string, 0, len(table))
	for k := range table {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		f := fs.Lookup(k)
		if f == nil || unlayered[k] {
			return nil, usageError("%s: unknown setting %q%s", what, k, suggest(fs, k))
		}
		if src[k] != "" {
			continue
		}
		v, e := tomlFlagValue(table[k])
		if e != nil {
			return nil, usageError("%s: %s: %v", what, k, e)
		}
		if e := fs.Set(k, v); e != nil {
			return nil, usageError("%s: %s = %q: %v", what, k, v, e)
		}
		src[k] = what
	}
	fs.VisitAll(func(f *flag.Flag) {
		if src[f.Name] == "" {
			src[f.Name] = "default"
		}
	})
	return src, nil
}

// envName is the environment variable of a flag.
func envName(prefix, flagName string) string {
	return prefix + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// serviceEnvPrefix is the prefix of `shoal service NAME`'s variables.
func serviceEnvPrefix(name string) string {
	return "SHOAL_SERVICE_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_")) + "_"
}

// tomlFlagValue turns a TOML value into the text a flag parses: strings
// as they are, numbers and booleans in Go syntax, arrays joined with
// commas (the list flags' form).
func tomlFlagValue(v any) (string, error) {
	switch x := v.(type) {
	case string:
		return x, nil
	case int64:
		return strconv.FormatInt(x, 10), nil
	case float64:
		return strconv.FormatFloat(x, 'g', -1, 64), nil
	case bool:
		return strconv.FormatBool(x), nil
	case []any:
		parts := make([]string, len(x))
		for i, e := range x {
			s, err := tomlFlagValue(e)
			if err != nil {
				return "", err
			}
			if strings.Contains(s, ",") {
				return "", fmt.Errorf("list item %q holds a comma", s)
			}
			parts[i] = s
		}
		return strings.Join(parts, ","), nil
	}
	return "", fmt.Errorf("want a string, number, boolean or list, not %T", v)
}

// suggest names the closest flag to a misspelt key, if one is close.
func suggest(fs *flag.FlagSet, key string) string {
	best, bestD := "", 3
	fs.VisitAll(func(f *flag.Flag) {
		if unlayered[f.Name] {
			return
		}
		if d := editDistance(key, f.Name); d < bestD {
			best, bestD = f.Name, d
		}
	})
	if best == "" {
		return ""
	}
	return fmt.Sprintf(" (did you mean %q?)", best)
}

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

// configPath is the file --config names, or else $SHOAL_CONFIG; "" for none.
// The path is made absolute so that children started in another directory
// read the same file.
func configPath(flagValue string, env []string) (string, error) {
	p := flagValue
	if p == "" {
		for _, kv := range env {
			if v, ok := strings.CutPrefix(kv, configEnv+"="); ok {
				p = v
			}
		}
	}
	if p == "" {
		return "", nil
	}
	abs, err := filepath.Abs(p)
	if err != nil {
		return "", usageError("config %s: %v", p, err)
	}
	if _, err := os.Stat(abs); err != nil {
		return "", usageError("config: %v", err)
	}
	return abs, nil
}

// printConfig writes the effective settings of fs as TOML, each with a
// comment saying where it came from, so the output is itself a config file.
func printConfig(w io.Writer, fs *flag.FlagSet, src flagSource, table string) {
	var b bytes.Buffer
	if table != "" {
		fmt.Fprintf(&b, "\n[%s]\n", table)
	}
	fs.VisitAll(func(f *flag.Flag) {
		if unlayered[f.Name] {
			return
		}
		if secret[f.Name] && f.Value.String() != "" {
			fmt.Fprintf(&b, "# %s (%s)\n# %s = (set, not shown)\n", oneLine(f.Usage), src[f.Name], f.Name)
			return
		}
		fmt.Fprintf(&b, "# %s (%s)\n%s = %s\n", oneLine(f.Usage), src[f.Name], f.Name, tomlLiteral(f))
	})
	_, _ = w.Write(b.Bytes())
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

// tomlLiteral writes a flag's value as TOML: booleans and integers bare,
// everything else (durations, sizes, lists, addresses) as a string, the
// form the flag itself parses.
func tomlLiteral(f *flag.Flag) string {
	v := f.Value.String()
	if bf, ok := f.Value.(interface{ IsBoolFlag() bool }); ok && bf.IsBoolFlag() {
		return v
	}
	if _, err := strconv.ParseInt(v, 10, 64); err == nil {
		return v
	}
	return strconv.Quote(v)
}

// settle applies the environment and the config file (flagPath, or else
// $SHOAL_CONFIG) to fs, already parsed from the command line. table picks
// the command's table from the file.
func settle(fs *flag.FlagSet, flagPath, envPrefix string, table func(*configFile) (map[string]any, string)) (flagSource, *configFile, error) {
	env := os.Environ()
	path, err := configPath(flagPath, env)
	if err != nil {
		return nil, nil, err
	}
	var cf *configFile
	var tab map[string]any
	what := "config"
	if path != "" {
		if cf, err = loadConfigFile(path); err != nil {
			return nil, nil, err
		}
		var name string
		tab, name = table(cf)
		what = "config " + path + name
	}
	src, err := layer(fs, envPrefix, env, tab, what)
	return src, cf, err
}

// serveTable picks the top level of a config file.
func serveTable(cf *configFile) (map[string]any, string) { return cf.top, "" }

// serviceTable picks a service's table of a config file.
func serviceTable(name string) func(*configFile) (map[string]any, string) {
	return func(cf *configFile) (map[string]any, string) {
		return cf.services[name], " [service." + name + "]"
	}
}
