// Package logging builds the zerolog logger every program passes down explicitly.
package logging

import (
	"io"
	"time"

	"github.com/rs/zerolog"
)

// New returns a logger at level ("trace" … "error"; unknown means info) writing JSON, or human-readable
// lines when format is "console".
func New(level, format string, w io.Writer) zerolog.Logger {
	lvl, err := zerolog.ParseLevel(level)
	if err != nil || lvl == zerolog.NoLevel {
		lvl = zerolog.InfoLevel
	}
	if format == "console" {
		w = zerolog.ConsoleWriter{Out: w, TimeFormat: time.TimeOnly}
	}
	return zerolog.New(w).Level(lvl).With().Timestamp().Logger()
}
