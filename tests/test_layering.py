"""Import direction is the architecture: the ingress never loads an engine and takes
nothing from deployments/ but the contract; the model deployments never load
starlette. Every module of both packages is checked (found with pkgutil), in a fresh
interpreter each, so one module's imports cannot hide another's."""

from __future__ import annotations

import ast
import importlib.util
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import deployments
import ingress

ENGINE_MODULES = ["vllm", "torch", "transformers", "diffusers"]
CONTRACT = "deployments.contract"
SHARED = {CONTRACT}


def _modules(package: object) -> list[str]:
    path = package.__path__  # type: ignore[attr-defined]
    prefix = package.__name__ + "."  # type: ignore[attr-defined]
    return sorted(m.name for m in pkgutil.walk_packages(path, prefix))


INGRESS = _modules(ingress)
DEPLOYMENTS = _modules(deployments)


def _loaded_after_import(module: str, candidates: list[str]) -> list[str]:
    code = f"import sys, {module}; print(','.join(m for m in {candidates!r} if m in sys.modules))"
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    ).stdout.strip()
    return [m for m in out.split(",") if m]


def _imported_names(module: str) -> set[str]:
    """Every module name an `import` or `from ... import` in the source names."""
    spec = importlib.util.find_spec(module)
    assert spec is not None and spec.origin is not None
    tree = ast.parse(Path(spec.origin).read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


def test_the_walk_finds_the_packages():
    assert "ingress.forward" in INGRESS and "ingress.endpoints.chat" in INGRESS
    assert "deployments.llm.server" in DEPLOYMENTS and CONTRACT in DEPLOYMENTS


@pytest.mark.parametrize("module", INGRESS)
def test_ingress_takes_only_the_contract_from_deployments(module):
    crossing = {
        n for n in _imported_names(module) if n == "deployments" or n.startswith("deployments.")
    }
    assert crossing <= SHARED, f"{module} imports {sorted(crossing - SHARED)}"


@pytest.mark.parametrize("module", INGRESS)
def test_ingress_imports_no_engine(module):
    assert _loaded_after_import(module, ENGINE_MODULES) == []


@pytest.mark.parametrize("module", DEPLOYMENTS)
def test_deployments_never_import_starlette_or_the_ingress(module):
    names = _imported_names(module)
    assert not {n.split(".")[0] for n in names} & {"starlette", "fastapi", "ingress"}


# Ray Serve itself loads starlette, so the whole-process check is for the modules
# that run in a replica without importing ray.serve at load time.
@pytest.mark.parametrize(
    "module",
    ["deployments.llm.server", "deployments.embeddings.server", "deployments.images.server"],
)
def test_model_servers_load_no_starlette(module):
    assert _loaded_after_import(module, ["starlette", "fastapi", "ingress"]) == []


@pytest.mark.parametrize("module", sorted(SHARED))
def test_shared_modules_need_only_stdlib_and_pydantic(module):
    assert _loaded_after_import(module, ["ray", "ingress", *ENGINE_MODULES]) == []
