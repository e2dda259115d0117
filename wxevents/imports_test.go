package wxevents_test

import (
	"go/parser"
	"go/token"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// The public packages stand alone: wxevents imports the standard library only (no broker), and subscribe
// adds nats.go, wxevents and OpenTelemetry's API — never its SDK, which is the service's choice, nor an
// internal package, which no other module could build.
func TestPublicPackagesImports(t *testing.T) {
	tests := []struct {
		dir     string
		allowed func(path string) bool
	}{
		{".", func(path string) bool { return !strings.Contains(strings.Split(path, "/")[0], ".") }},
		{"subscribe", func(path string) bool {
			return !strings.Contains(strings.Split(path, "/")[0], ".") ||
				path == "github.com/nats-io/nats.go/jetstream" || path == "github.com/wxpay-events/wxpay-events/wxevents" ||
				otelAPI(path)
		}},
	}
	for _, tt := range tests {
		files, err := filepath.Glob(filepath.Join(tt.dir, "*.go"))
		if err != nil || len(files) == 0 {
			t.Fatalf("%s: no Go files (%v)", tt.dir, err)
		}
		for _, f := range files {
			if strings.HasSuffix(f, "_test.go") {
				continue
			}
			parsed, err := parser.ParseFile(token.NewFileSet(), f, nil, parser.ImportsOnly)
			if err != nil {
				t.Fatal(err)
			}
			for _, imp := range parsed.Imports {
				if path, _ := strconv.Unquote(imp.Path.Value); !tt.allowed(path) {
					t.Errorf("%s imports %s", f, path)
				}
			}
		}
	}
}

// otelAPI reports whether path is a package of OpenTelemetry's API module (go.opentelemetry.io/otel and
// its trace, propagation, attribute and codes packages) rather than its SDK or an exporter.
func otelAPI(path string) bool {
	switch path {
	case "go.opentelemetry.io/otel", "go.opentelemetry.io/otel/trace", "go.opentelemetry.io/otel/propagation",
		"go.opentelemetry.io/otel/attribute", "go.opentelemetry.io/otel/codes":
		return true
	}
	return false
}

func TestOtelAPIIsNotTheSDK(t *testing.T) {
	for _, p := range []string{"go.opentelemetry.io/otel/sdk/trace", "go.opentelemetry.io/otel/exporters/otlp/otlptrace", "go.opentelemetry.io/contrib/exporters/autoexport"} {
		if otelAPI(p) {
			t.Errorf("%s counted as the API", p)
		}
	}
}
