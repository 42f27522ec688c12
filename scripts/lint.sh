#!/usr/bin/env bash
# Tooling is policy: ruff (lint and format) on the whole tree, mypy --strict on all of
# ingress/ and deployments/ (pyproject.toml holds both configurations).
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
echo "lint: ruff and mypy clean"
