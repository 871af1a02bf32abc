#!/usr/bin/env bash
# Proves the GPU path in under 5 minutes on one GPU (issue 15): a GPU worker
# (`distillery worker --gpu`) takes a digits job submitted with "resources": {"gpu": true},
# its confined teacher labels a 50,000-row transfer set and its student trains, all on CUDA;
# then the teacher's rows/s on the GPU against the CPU. Prints the figures (bench/gpu_check.py).
#
# Without a GPU it says so and checks the CPU path the same way (CI runs it so); exit 0 when
# the path works, 1 when the job fails or runs on another device than the one found.
#   bench/gpu_check.sh            # PYTHON=... to use another interpreter than .venv/bin/python
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}

if gpu=$("$PYTHON" -c 'import torch; assert torch.cuda.is_available(); print(torch.cuda.get_device_name(0))' 2>/dev/null); then
  device=cuda
  echo "GPU found: ${gpu}: checking the CUDA path"
  "$PYTHON" -c 'import onnxruntime as o; print("onnxruntime providers:", ", ".join(o.get_available_providers()))'
else
  device=cpu
  echo "no GPU found: checking the CPU path"
fi
exec timeout 300 "$PYTHON" bench/gpu_check.py --device "$device"
