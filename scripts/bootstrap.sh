#!/usr/bin/env bash
# Create (or refresh) the project environment in .venv from uv.lock, and the book's npm assets.
# Finds a Python 3.12 interpreter on this machine (never downloads one) and installs uv from PyPI
# into .tools/ if it is not on PATH. Idempotent: does nothing when .venv is newer than uv.lock and
# book/_vendor/node_modules newer than its package-lock.json.
set -euo pipefail
cd "$(dirname "$0")/.."

is_py312() { "$1" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 12) else 1)' >/dev/null 2>&1; }

find_python() {
  local c
  if [ -n "${PYTHON:-}" ] && is_py312 "$PYTHON"; then echo "$PYTHON"; return; fi
  # pyenv installs: the bare `python3.12` shim fails unless PYENV_VERSION selects it, so use the real binaries.
  local roots=("${PYENV_ROOT:-}" "$HOME/.pyenv" "/root/.pyenv" "/opt/pyenv")
  for r in "${roots[@]}"; do
    [ -n "$r" ] || continue
    for c in $(ls -d "$r"/versions/3.12*/bin/python3.12 2>/dev/null | sort -rV); do
      if is_py312 "$c"; then echo "$c"; return; fi
    done
  done
  for c in python3.12 /usr/local/bin/python3.12 /usr/bin/python3.12 python3; do
    if command -v "$c" >/dev/null 2>&1 && is_py312 "$(command -v "$c")"; then command -v "$c"; return; fi
  done
  return 1
}

PY=$(find_python) || { echo "error: no Python 3.12 interpreter found (set PYTHON=/path/to/python3.12)" >&2; exit 1; }

if command -v uv >/dev/null 2>&1; then
  UV=$(command -v uv)
elif [ -x .tools/bin/uv ]; then
  UV=.tools/bin/uv
else
  echo "bootstrap: installing uv into .tools/ with $PY" >&2
  "$PY" -m venv .tools
  .tools/bin/python -m pip install --quiet uv
  UV=.tools/bin/uv
fi

if ! { [ -f .venv/.synced ] && [ .venv/.synced -nt uv.lock ] && [ .venv/.synced -nt pyproject.toml ]; }; then
  echo "bootstrap: syncing .venv from uv.lock with $PY" >&2
  UV_PYTHON_DOWNLOADS=never "$UV" sync --frozen --all-extras --python "$PY"
  touch .venv/.synced
fi

# The JavaScript and CSS the book serves itself (Leaflet and what folium loads), pinned in
# book/_vendor/package-lock.json; npm writes node_modules/.package-lock.json when it is done.
VENDOR=book/_vendor
if ! { [ -f $VENDOR/node_modules/.package-lock.json ] && [ $VENDOR/node_modules/.package-lock.json -nt $VENDOR/package-lock.json ]; }; then
  if ! command -v npm >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then  # a fresh Debian machine
    sudo=$([ "$(id -u)" -eq 0 ] || ! command -v sudo >/dev/null || echo "sudo -n")
    echo "bootstrap: installing Debian's npm for the book's offline assets" >&2
    { $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq npm; } >/dev/null 2>&1 \
      || echo "bootstrap: note: could not install npm with apt-get" >&2
  fi
  if command -v npm >/dev/null 2>&1; then
    echo "bootstrap: installing the book's offline assets into $VENDOR/node_modules (npm ci)" >&2
    npm ci --prefix "$VENDOR" --ignore-scripts --no-audit --no-fund --loglevel=error >&2
  else
    echo "bootstrap: note: npm not found, so the book's offline assets (Leaflet, ...) are not installed and" \
         "the book will not build; install Node.js's npm (Debian: apt-get install npm) and run make env again" >&2
  fi
fi
