"""Import direction is the architecture: the ingress never loads an engine, and the
model deployments never load starlette."""

import subprocess
import sys

import pytest

ENGINE_MODULES = ["vllm", "torch", "transformers", "diffusers"]


def _loaded_after_import(module: str, candidates: list[str]) -> list[str]:
    code = (f"import sys, {module}; "
            f"print(','.join(m for m in {candidates!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                         text=True).stdout.strip()
    return [m for m in out.split(",") if m]


@pytest.mark.parametrize("module", ["ingress.builder", "ingress.app", "ingress.wire.chat",
                                    "ingress.images", "ingress.embeddings"])
def test_ingress_imports_no_engine(module):
    assert _loaded_after_import(module, ENGINE_MODULES) == []


@pytest.mark.parametrize("module", ["deployments.contract", "deployments.llm.server",
                                    "deployments.images.server",
                                    "deployments.embeddings.server"])
def test_deployments_import_no_starlette(module):
    assert _loaded_after_import(module, ["starlette", "fastapi"]) == []


def test_contract_needs_only_stdlib_and_pydantic():
    assert _loaded_after_import("deployments.contract", ["ray", *ENGINE_MODULES]) == []
