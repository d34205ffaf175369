// Command render renders a Helm chart's templates the way `helm template` does, with
// Go's text/template and the sprig function library that Helm itself uses, and prints
// every rendered manifest as one JSON array. Flowlake's tests use it to check the chart
// where no helm binary is available.
//
//	render CHART_DIR [-f values.yaml]... > manifests.json
package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"text/template"

	"github.com/Masterminds/sprig"
	"gopkg.in/yaml.v3"
)

type files map[string][]byte

func (f files) Get(name string) string { return string(f[name]) }

func (f files) Glob(pattern string) files {
	out := files{}
	for name, data := range f {
		if ok, _ := path.Match(pattern, name); ok {
			out[name] = data
		}
	}
	return out
}

func readYAML(p string) (map[string]interface{}, error) {
	data, err := os.ReadFile(p)
	if err != nil {
		return nil, err
	}
	out := map[string]interface{}{}
	if err := yaml.Unmarshal(data, &out); err != nil {
		return nil, fmt.Errorf("%s: %w", p, err)
	}
	return out, nil
}

func merge(dst, src map[string]interface{}) {
	for k, v := range src {
		if sv, ok := v.(map[string]interface{}); ok {
			if dv, ok := dst[k].(map[string]interface{}); ok {
				merge(dv, sv)
				continue
			}
		}
		dst[k] = v
	}
}

// jsonable turns yaml.v3's decoded values into values encoding/json accepts.
func jsonable(v interface{}) interface{} {
	switch t := v.(type) {
	case map[string]interface{}:
		for k, x := range t {
			t[k] = jsonable(x)
		}
		return t
	case []interface{}:
		for i, x := range t {
			t[i] = jsonable(x)
		}
		return t
	default:
		return v
	}
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: render CHART_DIR [-f values.yaml]...")
		os.Exit(2)
	}
	chartDir := os.Args[1]
	chart, err := readYAML(filepath.Join(chartDir, "Chart.yaml"))
	check(err)
	values, err := readYAML(filepath.Join(chartDir, "values.yaml"))
	check(err)
	for i := 2; i+1 < len(os.Args); i += 2 {
		if os.Args[i] != "-f" {
			check(fmt.Errorf("unknown argument %s", os.Args[i]))
		}
		extra, err := readYAML(os.Args[i+1])
		check(err)
		merge(values, extra)
	}

	chartFiles := files{}
	check(filepath.Walk(chartDir, func(p string, info os.FileInfo, err error) error {
		if err != nil || info.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(chartDir, p)
		data, err := os.ReadFile(p)
		chartFiles[filepath.ToSlash(rel)] = data
		return err
	}))

	root := template.New("chart")
	funcs := sprig.TxtFuncMap()
	delete(funcs, "env")
	delete(funcs, "expandenv")
	funcs["include"] = func(name string, data interface{}) (string, error) {
		var buf bytes.Buffer
		err := root.ExecuteTemplate(&buf, name, data)
		return buf.String(), err
	}
	funcs["required"] = func(msg string, v interface{}) (interface{}, error) {
		if v == nil || v == "" {
			return nil, fmt.Errorf("%s", msg)
		}
		return v, nil
	}
	funcs["toYaml"] = func(v interface{}) string {
		data, err := yaml.Marshal(v)
		if err != nil {
			return ""
		}
		return strings.TrimSuffix(string(data), "\n")
	}
	root.Funcs(funcs).Option("missingkey=zero")

	var names []string
	for name := range chartFiles {
		if strings.HasPrefix(name, "templates/") {
			names = append(names, name)
		}
	}
	sort.Strings(names)
	for _, name := range names {
		_, err := root.New(name).Parse(string(chartFiles[name]))
		check(err)
	}

	data := map[string]interface{}{
		"Values":  values,
		"Chart":   map[string]interface{}{"Name": chart["name"], "Version": chart["version"], "AppVersion": chart["appVersion"]},
		"Release": map[string]interface{}{"Name": "flowlake", "Namespace": "flowlake", "Service": "Helm", "IsInstall": true},
		"Capabilities": map[string]interface{}{
			"KubeVersion": map[string]interface{}{"Version": "v1.31.0", "Major": "1", "Minor": "31"},
		},
		"Files": chartFiles,
	}
	var docs []interface{}
	for _, name := range names {
		if strings.HasPrefix(path.Base(name), "_") || !strings.HasSuffix(name, ".yaml") {
			continue
		}
		var buf bytes.Buffer
		check(root.ExecuteTemplate(&buf, name, data))
		for _, doc := range strings.Split(buf.String(), "\n---") {
			var obj map[string]interface{}
			if err := yaml.Unmarshal([]byte(doc), &obj); err != nil {
				check(fmt.Errorf("%s: %w\n%s", name, err, doc))
			}
			if obj != nil {
				obj["__source"] = name
				docs = append(docs, jsonable(obj))
			}
		}
	}
	out, err := json.MarshalIndent(docs, "", "  ")
	check(err)
	fmt.Println(string(out))
}

func check(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "render:", err)
		os.Exit(1)
	}
}
