#!/usr/bin/env bash
# Prepare what the Python 3.12 GPU machine lacks (no internet; torch/transformers/peft present) under .cache/:
#   .cache/gpu_jericho  pure-Python copies of DI-engine, LightZero (without its cp311 compiled tree), jericho
#                       (its libfrotz.so is loaded through ctypes and does not depend on the Python version), gymnasium
#   .cache/gpu_site     the other pure-Python dependencies (easydict, treetensor, gym, tensorboardX, ...)
#   .cache/gpu_whl312   cp312 wheels of the compiled ones (h5py, pynng, cffi, treevalue, xxhash) and a few others
# On the GPU machine:
#   pip install -q --no-index --no-deps --target /tmp/site .cache/gpu_whl312/*.whl
#   export PYTHONPATH=$PWD/.cache/gpu_jericho:$PWD/.cache/gpu_site:/tmp/site:$PWD
#   python3 -m zoo.jericho.priorzero.priorzero_orz_entry --debug --device cuda
set -euo pipefail
cd "$(dirname "$0")/.."
SITE=".venv/lib/python3.11/site-packages"
[ -d "$SITE" ] || { echo "run 'make setup' first" >&2; exit 1; }
rm -rf .cache/gpu_jericho .cache/gpu_site .cache/gpu_whl312
mkdir -p .cache/gpu_jericho .cache/gpu_site .cache/gpu_whl312
(cd "$SITE" && tar cf - --exclude=__pycache__ --exclude='*.so' ding lzero jericho gymnasium gymnasium-0.28.0.dist-info \
    farama_notifications jumpy) | (cd .cache/gpu_jericho && tar xf -)
cp "$SITE"/jericho/*.so .cache/gpu_jericho/jericho/ 2>/dev/null || true
(cd "$SITE" && tar cf - --exclude=__pycache__ easydict treetensor gym gym_notices tensorboardX tabulate einops dill \
    enum_tools hbutils ditk click rich markdown_it mdurl pygments cloudpickle graphviz deprecation.py urlobject \
    dotenv flask werkzeug itsdangerous) | (cd .cache/gpu_site && tar xf -)
for spec in $(grep -iE '^(hickle|h5py|mpire|pynng|cffi|pycparser|sniffio|redis|treevalue|xxhash)==' requirements/lock.txt); do
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d .cache/gpu_whl312 "$spec"
done
du -sh .cache/gpu_jericho .cache/gpu_site .cache/gpu_whl312
