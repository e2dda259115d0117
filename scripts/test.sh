#!/usr/bin/env bash
# The project's test command (README: "Run the tests"). It installs what a fresh Debian machine lacks,
# then vets and runs every test with the race detector, a short fuzzing pass over the internet-facing
# parsers, and the offline validation of the Kubernetes manifests. Any failure fails the script.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\n== %s\n' "$*"; }

if ! command -v redis-server >/dev/null 2>&1 && [ -z "${REDIS_URL:-}" ]; then
  say "redis-server is missing: installing it from Debian's packages"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq redis-server >/dev/null
  # The package may start a system instance; the tests start their own on free ports and need none.
fi
command -v redis-server >/dev/null 2>&1 || [ -n "${REDIS_URL:-}" ] || { echo "redis-server still missing" >&2; exit 1; }

say "go vet"
go vet ./...

say "go test -race"
go test -race -count=1 -timeout 25m ./...

say "fuzz (short pass per target; seed corpora live in testdata/fuzz)"
FUZZTIME="${FUZZTIME:-10s}"
for pkg in $(go list ./...); do
  dir=$(go list -f '{{.Dir}}' "$pkg")
  for target in $(grep -ho '^func Fuzz[A-Za-z0-9_]*' "$dir"/*_test.go 2>/dev/null | sed 's/^func //' | sort -u); do
    echo "-- $pkg $target"
    go test -run='^$' -fuzz="^${target}\$" -fuzztime="$FUZZTIME" "$pkg" >/dev/null
  done
done

if [ -f k8s/go.mod ]; then
  say "Kubernetes manifests (kustomize build + strict decoding)"
  (cd k8s && go vet ./... && go test -count=1 ./...)
fi

say "all tests passed"
