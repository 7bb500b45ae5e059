#!/usr/bin/env bash
# Builds promcheck (main.go beside this script) against the prometheus-operator API module pinned
# in go.mod, once per content of main.go, go.mod and go.sum, into a cache folder keyed by it.
# Prints the binary's path on its last line.
#   tests/promcheck/build.sh           build if missing, print the path
#   tests/promcheck/build.sh --path    print where it is (or would be), build nothing
#   SPINE_PROMCHECK_CACHE=/some/dir    where to keep it (default: ~/.cache/spine/promcheck)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
key="$(cat "$here/main.go" "$here/go.mod" "$here/go.sum" | sha256sum | cut -c1-16)"
cache="${SPINE_PROMCHECK_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/spine/promcheck}"
target="$cache/$key/promcheck"
if [ "${1:-}" = "--path" ]; then echo "$target"; exit 0; fi
if [ -x "$target" ]; then echo "$target"; exit 0; fi
command -v go >/dev/null || { echo "Go is needed to build promcheck (tests/promcheck/build.sh)" >&2; exit 1; }
mkdir -p "$cache/$key"
exec 9>"$cache/$key/.lock"
flock 9
if [ -x "$target" ]; then echo "$target"; exit 0; fi
echo "building promcheck into $target (once)" >&2
tmp="$(mktemp "$cache/$key/promcheck.XXXXXX")"
trap 'rm -f "$tmp"' EXIT
cd "$here"
CGO_ENABLED=0 GOFLAGS="-mod=readonly -buildvcs=false" go build -trimpath -o "$tmp" .
chmod +x "$tmp" && mv -f "$tmp" "$target"
trap - EXIT
echo "$target"
