package verify

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net/http"
	"strings"
)

// ErrHeaderLines reports a captured header file that cannot be read as "Name: value" lines.
var ErrHeaderLines = errors.New("verify: malformed header lines")

// maxHeaderLine bounds one captured line; real WeChat headers are well under 1 KiB.
const maxHeaderLine = 16 << 10

// ParseHeaderLines reads captured HTTP header lines ("Name: value", one per line) as `curl -D`, a proxy log
// or a browser's "copy request headers" writes them. A request or status line ("POST /notify HTTP/1.1",
// "HTTP/1.1 200 OK") and blank lines are skipped; CRLF and LF endings are both accepted. A line that is
// neither fails with ErrHeaderLines and its line number.
func ParseHeaderLines(data []byte) (http.Header, error) {
	h := http.Header{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 4096), maxHeaderLine)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimRight(sc.Text(), "\r")
		if strings.TrimSpace(line) == "" || isStartLine(line) {
			continue
		}
		name, value, ok := strings.Cut(line, ":")
		name = strings.TrimSpace(name)
		if !ok || name == "" || strings.ContainsAny(name, " \t") {
			return nil, fmt.Errorf("%w: line %d is not \"Name: value\"", ErrHeaderLines, n)
		}
		h.Add(name, strings.TrimSpace(value))
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrHeaderLines, err)
	}
	return h, nil
}

func isStartLine(line string) bool {
	if strings.HasPrefix(line, "HTTP/") {
		return true
	}
	f := strings.Fields(line)
	// A method never has a colon; without this check a header such as "User-Agent: curl HTTP/1.1" would
	// be taken for a request line and silently dropped.
	return len(f) == 3 && strings.HasPrefix(f[2], "HTTP/") && !strings.Contains(f[0], ":")
}
