#!/usr/bin/env bash
# The one prepared run for a lent GPU (H100/H200): CUDA-path tests, then the training-step benchmark.
# Usage on the device machine, from the repo root: bash benchmarks/gpu_check.sh   (writes logs to $OUT if set)
# The device image has torch but not fastai: its pure-Python wheels travel in .whl/ (see benchmarks/README.md).
set -u
cd "$(dirname "$0")/.."
out=${OUT:-/tmp/gpu_check}; mkdir -p "$out"
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD:${PYTHONPATH:-} PYTHONUNBUFFERED=1 MPLBACKEND=Agg
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, fastai; print('torch', torch.__version__, '| fastai', fastai.__version__, '|', torch.cuda.get_device_name())"

echo "== CUDA tests"
timeout 150 python3 -m pytest -q -p no:cacheprovider tests/test_cuda.py tests/test_data.py -k "cuda or gpu" 2>&1 | tee "$out/pytest_cuda.txt" | tail -15

echo "== training step, 128x128, batch 16, the paper's model (auto precision: bf16 + channels_last)"
timeout 200 python3 benchmarks/train_step.py --device cuda --iters 200 --rounds 2 2>&1 | tee "$out/train_step_cuda.txt"

echo "== same, G compiled"
timeout 200 python3 benchmarks/train_step.py --device cuda --iters 200 --rounds 2 --compile 2>&1 | tee "$out/train_step_cuda_compile.txt" | tail -8
