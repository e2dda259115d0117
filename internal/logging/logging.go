// Package logging builds the zerolog logger every program passes down explicitly.
package logging

import (
	"io"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/term"
)

// New returns a logger at level ("trace" … "error"; unknown means info) writing JSON, or human-readable
// lines when format is "console" — coloured only when w is a terminal, so that a file or a pipe gets no
// escape codes.
func New(level, format string, w io.Writer) zerolog.Logger {
	lvl, err := zerolog.ParseLevel(level)
	if err != nil || lvl == zerolog.NoLevel {
		lvl = zerolog.InfoLevel
	}
	if format == "console" {
		w = zerolog.ConsoleWriter{Out: w, TimeFormat: time.TimeOnly, NoColor: !isTerminal(w)}
	}
	return zerolog.New(w).Level(lvl).With().Timestamp().Logger()
}

// isTerminal reports whether w is a file descriptor of a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(interface{ Fd() uintptr })
	return ok && term.IsTerminal(int(f.Fd()))
}
