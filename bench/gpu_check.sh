#!/usr/bin/env bash
# One command for the GPU figures of the runtime (see bench/gpu_check.py): graph decode == eager
# decode, decode tok/s at batch 1/4/16, TTFT of a 1920x1080 screenshot + 300 tokens, agent step time.
# Uses .venv/bin/python when it has CUDA; otherwise the machine's python3 with kimi_agent made
# importable from this checkout (and wheels from .whl/ if present, e.g. pydantic on a bare GPU box).
#   bash bench/gpu_check.sh [--compile]
set -uo pipefail
cd "$(dirname "$0")/.."
py=python3
if [ -x .venv/bin/python ] && .venv/bin/python -c "import torch, sys; sys.exit(not torch.cuda.is_available())" 2>/dev/null; then
    py=.venv/bin/python
else
    site=$(mktemp -d)
    if compgen -G ".whl/*.whl" >/dev/null; then
        python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site/whl" .whl/*.whl || exit 2
    fi
    pkg="$site/pkg/kimi_agent"
    mkdir -p "$pkg"
    for f in agent/*; do ln -s "$PWD/$f" "$pkg/"; done
    for sub in actions env tasks model_runtime; do ln -s "$PWD/$sub" "$pkg/$sub"; done
    export PYTHONPATH="$site/pkg:$site/whl${PYTHONPATH:+:$PYTHONPATH}"
fi
if ! "$py" -c "import torch, sys; sys.exit(not torch.cuda.is_available())"; then
    echo "gpu_check: $py has no CUDA device (torch.cuda.is_available() is False)" >&2
    exit 2
fi
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader 2>/dev/null || true
PYTHONUNBUFFERED=1 exec "$py" bench/gpu_check.py "$@"
