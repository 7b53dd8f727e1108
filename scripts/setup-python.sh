#!/usr/bin/env bash
# Python test prerequisites: a virtual environment in .venv with tests/python/requirements.txt.
# Idempotent: pip runs only when the requirements changed since the last successful install.
set -euo pipefail
cd "$(dirname "$0")/.."

requirements=tests/python/requirements.txt
stamp=.venv/.requirements.sha256

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi

want="$(sha256sum "$requirements" | cut -d' ' -f1)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  echo "python test requirements already installed"
  exit 0
fi

.venv/bin/python -m pip install --quiet --disable-pip-version-check --requirement "$requirements"
echo "$want" > "$stamp"
echo "python test requirements installed"
