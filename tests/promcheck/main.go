// Command promcheck decodes prometheus-operator objects (ServiceMonitor, PodMonitor,
// PrometheusRule) strictly into prometheus-operator's own Go API types, so a misspelt,
// misplaced or mistyped field fails here as the API server's schema would refuse it.
// Usage: promcheck FILE...  (YAML streams; other kinds are skipped). Exit 1 on any error.
// Built by tests/promcheck/build.sh; run by tests/integration/test_monitoring.py.
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	k8syaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

func target(kind string) any {
	switch kind {
	case "ServiceMonitor":
		return &monitoringv1.ServiceMonitor{}
	case "PodMonitor":
		return &monitoringv1.PodMonitor{}
	case "PrometheusRule":
		return &monitoringv1.PrometheusRule{}
	}
	return nil
}

func check(path string) (int, []string) {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0, []string{err.Error()}
	}
	var problems []string
	checked := 0
	decoder := k8syaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
	for {
		var object map[string]any
		if err := decoder.Decode(&object); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			return checked, append(problems, fmt.Sprintf("%s: %v", path, err))
		}
		kind, _ := object["kind"].(string)
		typed := target(kind)
		if typed == nil {
			continue
		}
		name := "?"
		if metadata, ok := object["metadata"].(map[string]any); ok {
			name, _ = metadata["name"].(string)
		}
		raw, err := json.Marshal(object)
		if err == nil {
			err = yaml.UnmarshalStrict(raw, typed)
		}
		checked++
		if err != nil {
			problems = append(problems, fmt.Sprintf("%s: %s %s: %v", path, kind, name, err))
		} else {
			fmt.Printf("ok %s %s\n", kind, name)
		}
	}
	return checked, problems
}

func main() {
	total := 0
	var problems []string
	for _, path := range os.Args[1:] {
		checked, found := check(path)
		total += checked
		problems = append(problems, found...)
	}
	for _, problem := range problems {
		fmt.Fprintln(os.Stderr, problem)
	}
	fmt.Printf("%d checked, %d failed\n", total, len(problems))
	if len(problems) > 0 || total == 0 {
		os.Exit(1)
	}
}
