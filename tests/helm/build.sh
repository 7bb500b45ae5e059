#!/usr/bin/env bash
# Builds the Helm CLI the chart tests use, from the Go module pinned in tests/helm/go.mod
# (helm.sh/helm/v4, from the Go module proxy; no source of Helm's is kept here), once per version,
# into a cache folder keyed by that version. Prints the binary's path on its last line.
#   tests/helm/build.sh            build if missing, print the path
#   tests/helm/build.sh --path     print where the binary is (or would be), build nothing
#   SPINE_HELM_CACHE=/some/dir     where to keep it (default: ~/.cache/spine/helm)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
version="$(awk '$1 == "require" && $2 == "helm.sh/helm/v4" {print $3}' "$here/go.mod")"
[ -n "$version" ] || { echo "tests/helm/go.mod names no helm.sh/helm/v4 version" >&2; exit 1; }
cache="${SPINE_HELM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/spine/helm}"
target="$cache/$version/helm"
if [ "${1:-}" = "--path" ]; then echo "$target"; exit 0; fi
if [ -x "$target" ] && "$target" version --short >/dev/null 2>&1; then
  echo "$target"; exit 0
fi
command -v go >/dev/null || { echo "Go is needed to build helm $version (tests/helm/build.sh)" >&2; exit 1; }
mkdir -p "$cache/$version"
# One build at a time (make test and a test run may start together); the second one waits.
exec 9>"$cache/$version/.lock"
flock 9
if [ -x "$target" ] && "$target" version --short >/dev/null 2>&1; then
  echo "$target"; exit 0
fi
echo "building helm $version into $target (once; a few minutes on 2 cores)" >&2
tmp="$(mktemp "$cache/$version/helm.XXXXXX")"
trap 'rm -f "$tmp"' EXIT
cd "$here"
# -mod=readonly: go.mod and go.sum are the pins; a build never edits them.
CGO_ENABLED=0 GOFLAGS="-mod=readonly -buildvcs=false" go build -trimpath -o "$tmp" \
  -ldflags "-s -w -X helm.sh/helm/v4/internal/version.version=$version" \
  helm.sh/helm/v4/cmd/helm
chmod +x "$tmp" && mv -f "$tmp" "$target"
trap - EXIT
"$target" version --short >&2
echo "$target"
