#!/usr/bin/env bash
# The GPU check for a lent machine (no internet, no Ray): installs the wheels carried in
# .whl/ (diffusers, pydantic and what they lack there) into /tmp/site, then runs
# bench/gpu_check.py. Run from the repo root with the device command
#   bash scripts/gpu_check.sh        (carry: [".whl"])
# Results: $OUT/gpu_check.json and $OUT/gpu_check.log.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-/tmp/gpu_check_out}"
mkdir -p "$OUT"
export OUT PYTHONPATH="/tmp/site:$PWD" HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 \
  PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
{
  nvidia-smi
  ls .whl/*.whl || echo "no wheels in .whl/: was it carried?"
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl
  timeout 540 python3 bench/gpu_check.py "$@"
  echo "gpu_check exit code: $?"
} 2>&1 | tee "$OUT/gpu_check.log"
