#!/usr/bin/env bash
# The project's test command (README: "Run the tests"). It installs what a fresh Debian machine lacks
# (redis-server, redis-sentinel, PostgreSQL, Chromium), then vets and runs every test with the race
# detector, a short fuzzing pass over the internet-facing parsers, and the offline validation of the
# Kubernetes manifests. Any failure fails the script.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\n== %s\n' "$*"; }

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

# PostgreSQL's server programs: on PATH, or where Debian's postgresql package puts them.
have_postgres() {
  command -v initdb >/dev/null 2>&1 || compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null
}

missing=()
if ! command -v redis-server >/dev/null 2>&1 && [ -z "${REDIS_URL:-}" ]; then
  missing+=(redis-server)
fi
# Redis Sentinel for the failover test (internal/faulttest): Debian packages it apart from redis-server.
if ! command -v redis-sentinel >/dev/null 2>&1; then
  missing+=(redis-sentinel)
fi
if ! have_postgres && [ -z "${PG_URL:-}${DATABASE_URL:-}" ]; then
  missing+=(postgresql)
fi
# Headless Chromium for the web console's browser test (internal/console), driven over the DevTools protocol.
if ! command -v chromium >/dev/null 2>&1; then
  missing+=(chromium chromium-driver)
fi
if [ "${#missing[@]}" -gt 0 ]; then
  say "${missing[*]} missing: installing from Debian's packages"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
  # The packages may start system instances; the tests start their own servers on free ports
  # (PostgreSQL as an unprivileged user in a temporary directory) and need none.
fi
command -v redis-server >/dev/null 2>&1 || [ -n "${REDIS_URL:-}" ] || { echo "redis-server still missing" >&2; exit 1; }
command -v redis-sentinel >/dev/null 2>&1 || { echo "redis-sentinel still missing" >&2; exit 1; }
have_postgres || [ -n "${PG_URL:-}${DATABASE_URL:-}" ] || { echo "PostgreSQL (initdb, postgres) still missing" >&2; exit 1; }
command -v chromium >/dev/null 2>&1 || { echo "chromium still missing" >&2; exit 1; }

say "go vet"
go vet ./...

say "go test -race"
go test -race -count=1 -timeout 25m ./...

say "fuzz (short pass per target; seed corpora live in testdata/fuzz)"
FUZZTIME="${FUZZTIME:-3s}"
fuzzlog=$(mktemp)
trap 'rm -f "$fuzzlog"' EXIT
# A failing input found by the fuzzer fails the script at once, with the fuzzer's output (the input is
# written to the package's testdata/fuzz). Any other failure of the fuzzing engine (a worker it lost on a
# loaded machine, say) is printed and the target tried once more.
fuzz() {
  go test -run='^$' -fuzz="^${2}\$" -fuzztime="$FUZZTIME" "$1" >"$fuzzlog" 2>&1
}
for pkg in $(go list ./...); do
  dir=$(go list -f '{{.Dir}}' "$pkg")
  for target in $(grep -ho '^func Fuzz[A-Za-z0-9_]*' "$dir"/*_test.go 2>/dev/null | sed 's/^func //' | sort -u); do
    echo "-- $pkg $target"
    if fuzz "$pkg" "$target"; then
      continue
    fi
    cat "$fuzzlog"
    if grep -q 'Failing input written to' "$fuzzlog"; then
      echo "fuzz: $target found a failing input" >&2
      exit 1
    fi
    echo "-- $pkg $target: the fuzzing engine failed without a failing input; once more"
    if ! fuzz "$pkg" "$target"; then
      cat "$fuzzlog"
      echo "fuzz: $target failed twice" >&2
      exit 1
    fi
  done
done

if [ -f k8s/go.mod ]; then
  say "Kubernetes manifests (kustomize build + strict decoding)"
  (cd k8s && go vet ./... && go test -count=1 ./...)
fi

say "all tests passed"
