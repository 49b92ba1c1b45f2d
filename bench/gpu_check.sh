#!/usr/bin/env bash
# GPU check (single H100/H200, < 5 minutes): the CUDA hot path performs no host sync, then the
# ratio table on the GPU. Run from the repository root with torch (CUDA) and the package
# importable, e.g. `pip install -e . --no-deps` beside a CUDA torch.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
python -m bench.gpu_check
python -m bench --device cuda --repeat 15 --json "${OUT:-bench/results}/gpu.json"
