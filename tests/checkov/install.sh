#!/usr/bin/env bash
# Installs checkov (PyPI, pinned below) into its own venv in a cache folder keyed by version,
# once: its many pinned dependencies stay out of the project's venv. Prints checkov's path.
#   tests/checkov/install.sh           install if missing, print the path
#   tests/checkov/install.sh --path    print where it is (or would be), install nothing
#   SPINE_CHECKOV_CACHE=/some/dir      where to keep it (default: ~/.cache/spine/checkov)
set -euo pipefail
version=3.3.30
cache="${SPINE_CHECKOV_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/spine/checkov}"
venv="$cache/$version"
target="$venv/bin/checkov"
if [ "${1:-}" = "--path" ]; then echo "$target"; exit 0; fi
if [ -x "$target" ] && [ -f "$venv/.installed" ]; then echo "$target"; exit 0; fi
mkdir -p "$cache"
exec 9>"$cache/.lock"
flock 9
if [ -x "$target" ] && [ -f "$venv/.installed" ]; then echo "$target"; exit 0; fi
echo "installing checkov $version into $venv (once; a few minutes)" >&2
rm -rf "$venv"
python3 -m venv "$venv"
"$venv/bin/python" -m pip install -q --upgrade pip
"$venv/bin/python" -m pip install -q "checkov==$version"
"$target" --version >&2
touch "$venv/.installed"
echo "$target"
