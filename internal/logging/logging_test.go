package logging_test

import (
	"bytes"
	"os"
	"strings"
	"testing"

	"github.com/wxpay-events/wxpay-events/internal/logging"
)

// Console logs written to a file or a pipe carry no colour codes.
func TestConsoleWithoutTerminalHasNoColour(t *testing.T) {
	var buf bytes.Buffer
	log := logging.New("info", "console", &buf)
	log.Info().Str("mchid", "1900000100").Msg("receiver listening")
	if out := buf.String(); strings.Contains(out, "\x1b[") || !strings.Contains(out, "receiver listening") || !strings.Contains(out, "mchid=1900000100") {
		t.Fatalf("console line %q", out)
	}
	f, err := os.CreateTemp(t.TempDir(), "log")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fileLog := logging.New("info", "console", f)
	fileLog.Warn().Msg("to a file")
	b, _ := os.ReadFile(f.Name())
	if strings.Contains(string(b), "\x1b[") {
		t.Fatalf("a file got colour codes: %q", b)
	}
	buf.Reset()
	quiet := logging.New("nonsense", "json", &buf)
	quiet.Debug().Msg("hidden")
	if buf.Len() != 0 {
		t.Fatalf("an unknown level is not info: %q", buf.String())
	}
}
