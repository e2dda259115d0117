#!/usr/bin/env bash
# Runs the checked-in golangci-lint configuration (.golangci.yml) with a pinned golangci-lint, installing that
# version from the Go module proxy when it is missing (a few minutes the first time; cached after).
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION="${GOLANGCI_LINT_VERSION:-v2.15.0}"
BIN="$(go env GOPATH)/bin/golangci-lint"
if ! "$BIN" version 2>/dev/null | grep -q "version ${VERSION#v} "; then
  echo "== installing golangci-lint $VERSION"
  go install "github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$VERSION"
fi
echo "== golangci-lint run"
"$BIN" run ./...
