#!/usr/bin/env bash
# The GPU part of benchmarks/real_sizes.py on one GPU, in under 8 minutes: Qwen2-VL-2B and -7B with random
# weights, LoRA training of our loop against TRL's SFTTrainer and transformers.Trainer (samples/s, tokens/s,
# MFU, peak memory), evaluation and scoring throughput. Writes benchmarks/results/real_sizes.json (the CPU
# part is measured again in the same run). Extra flags go to real_sizes.py (e.g. --sizes 2b, --steps 40).
#
#   bash benchmarks/gpu.sh
#
# Needs a CUDA build of torch in the environment (on a GPU machine `pip install -e ".[bench]"` from PyPI
# gives one) and no network: the models are built from their configs.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
if ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "gpu.sh: torch in $PY sees no CUDA device (torch $("$PY" -c 'import torch; print(torch.__version__)'))." >&2
    echo "        Install a CUDA build of torch there, or run 'python benchmarks/real_sizes.py --smoke' on CPU." >&2
    exit 2
fi
"$PY" -c "import trl, datasets" 2>/dev/null || "$PY" -m pip install -q "trl>=1.16" "datasets>=3"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
# real_sizes.py stops starting new measurements after --budget-s (420 s) and saves after each one; the
# timeout is the hard stop at 8 minutes.
exec timeout 480 "$PY" benchmarks/real_sizes.py --gpu "$@"
