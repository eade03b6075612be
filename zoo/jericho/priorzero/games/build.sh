#!/usr/bin/env bash
# Rebuild The Lighthouse (lighthouse.z5 + lighthouse.json) from lighthouse.inf; `make game` calls this.
# Needs Debian's inform6-compiler and inform6-library; the build script itself only uses the standard library.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../../.." && pwd)"
PY="${PY:-$ROOT/.venv/bin/python}"
[ -x "$PY" ] || PY=python3
cd "$ROOT"
exec "$PY" -m zoo.jericho.priorzero.games.build "$@"
