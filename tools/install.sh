#!/usr/bin/env bash
# Set up everything lsa needs in a virtual environment (default: .venv in the repo root):
# the pinned OpenMMLab stack on torch 2.13.0, mmcv 2.1.0 with its compiled ops, and lsa
# itself with its extension lsa._C.
#
#   bash tools/install.sh [VENV_DIR]
#
# mmcv 2.1.0 is an sdist only. If a wheelhouse with a prebuilt mmcv wheel exists
# (LSA_WHEELHOUSE, default ../shared/wheels) it is used through pip's --find-links option;
# otherwise mmcv is built from source once (20-35 min on 2 cores) and cached in
# ~/.cache/lsa-wheels for the next run. Environment knobs: PYTHON (interpreter, default
# python3.11), LSA_WHEELHOUSE, MAX_JOBS, LSA_WITH_CUDA (see setup.py).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
VENV=${1:-.venv}
log() { printf '\n== lsa install: %s\n' "$*"; }
die() { printf '\nlsa install FAILED: %s\n' "$*" >&2; exit 1; }

# Never let a caller's PIP_FIND_LINKS replace the machine's own find-links (it would make
# torch==2.13.0 resolve to the multi-GB CUDA build).
unset PIP_FIND_LINKS

PYTHON=${PYTHON:-}
if [ -z "$PYTHON" ]; then
  for cand in python3.11 python3 python; do
    if command -v "$cand" >/dev/null 2>&1 && \
       "$cand" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; then
      PYTHON=$cand; break
    fi
  done
fi
[ -n "$PYTHON" ] || die "Python 3.11 not found (set PYTHON=/path/to/python3.11)"

if [ ! -x "$VENV/bin/python" ]; then
  log "creating virtual environment $VENV with $($PYTHON --version)"
  "$PYTHON" -m venv "$VENV"
fi
# shellcheck disable=SC1091
. "$VENV/bin/activate"
PIP="python -m pip install --disable-pip-version-check"

log "build tools (setuptools<81: mmcv's setup.py and mmengine's mmdet:: configs need pkg_resources)"
$PIP -r requirements/build.txt

log "torch==2.13.0 (pinned: an unpinned torch pulls several GB of CUDA wheels)"
$PIP torch==2.13.0
$PIP "numpy<2" "opencv-python<4.12" "opencv-python-headless<4.12" -r requirements/runtime.txt

TORCH_TAG=$(python -c 'import torch; print("cu" + torch.version.cuda.replace(".", "") if torch.version.cuda else "cpu")')
WHEELHOUSE=${LSA_WHEELHOUSE:-$ROOT/../shared/wheels}
CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/lsa-wheels/py311-torch2.13.0-$TORCH_TAG
if python -c 'import mmcv, importlib; assert mmcv.__version__ == "2.1.0"; importlib.import_module("mmcv._ext")' 2>/dev/null; then
  log "mmcv 2.1.0 with ops already installed"
elif [ "$TORCH_TAG" = cpu ] && ls "$WHEELHOUSE"/mmcv-2.1.0-*.whl >/dev/null 2>&1; then
  log "mmcv 2.1.0 from the wheelhouse $WHEELHOUSE"
  $PIP --find-links "$WHEELHOUSE" --only-binary mmcv mmcv==2.1.0
elif ls "$CACHE"/mmcv-2.1.0-*.whl >/dev/null 2>&1; then
  log "mmcv 2.1.0 from the local build cache $CACHE"
  $PIP --find-links "$CACHE" --only-binary mmcv mmcv==2.1.0
else
  log "building mmcv 2.1.0 from source with MMCV_WITH_OPS=1 (20-35 min on 2 cores; cached in $CACHE)"
  SRC=$(mktemp -d)
  python -m pip download --no-deps --no-binary :all: --no-build-isolation mmcv==2.1.0 -d "$SRC"
  tar xzf "$SRC"/mmcv-2.1.0.tar.gz -C "$SRC"
  # torch >= 2.14 headers require C++20; harmless for 2.13 (openmmlab_stack.md 1.2).
  sed -i 's/-std=c++17/-std=c++20/g' "$SRC"/mmcv-2.1.0/setup.py
  (cd "$SRC"/mmcv-2.1.0 && MMCV_WITH_OPS=1 MAX_JOBS=${MAX_JOBS:-2} \
     python -m pip wheel --no-build-isolation --no-deps -w "$CACHE" .)
  $PIP --find-links "$CACHE" --only-binary mmcv mmcv==2.1.0
  rm -rf "$SRC"
fi
python -c 'from mmcv.ops import nms, RoIAlign' || \
  die "mmcv is installed without its compiled ops (mmcv._ext missing); remove it and re-run"

log "OpenMMLab toolboxes"
$PIP -r requirements/mminstall.txt
# mmpretrain imports torchvision, whose PyPI wheel is CUDA-only: install it without deps;
# lsa.compat defines the torchvision::nms schema on CPU torch so it imports.
$PIP --no-deps torchvision==0.28.0
$PIP -r requirements/tests.txt

log "lsa and its extension lsa._C"
$PIP --no-build-isolation -e .
python -m lsa.info
python - <<'PY' || die "lsa._C did not load (see python -m lsa.info)"
from lsa.ops import HAS_EXT
assert HAS_EXT
PY
log "done: activate with '. $VENV/bin/activate'"
