"""docs/configuration.md names everything that configures this project: every environment
variable the code, the scripts and the configs read or set (its "## Environment variables"
section), and every field of the application arguments' pydantic models (its
"## Config keys" section). Pure and fast: files are read as text, the config models are
imported (they import no engine and no Ray).

A name counts as documented when it is the first cell of a table row in its section,
in backticks: `NAME` for a variable, `key.sub_key` for a config field (`key[].sub_key`
for the fields of a list's items)."""

from __future__ import annotations

import ast
import importlib
import re
import typing
from collections.abc import Iterator
from pathlib import Path

import yaml
from pydantic import BaseModel

from deployments.app_config import ModelAppConfig
from ingress.config import AuthConfig, IngressConfig

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "configuration.md"
# Shell variables with these prefixes are environment variables of ours, Ray's, vLLM's or
# Hugging Face's wherever a script reads them, even without a `${X:-default}`.
ENV_PREFIXES = ("OPENAI_SERVE_", "RAY_", "VLLM_", "HF_")
_ENV_NAME = re.compile(r"^(?:OPENAI_SERVE|RAY|VLLM|HF)_[A-Z0-9_]+$")


def _python_files() -> list[Path]:
    files = [*ROOT.glob("ingress/**/*.py"), *ROOT.glob("deployments/**/*.py")]
    files += [*ROOT.glob("scripts/*.py"), *ROOT.glob("bench/*.py"), *ROOT.glob("cluster/*.py")]
    return sorted(files)


def _shell_files() -> list[Path]:
    return sorted([*ROOT.glob("scripts/*.sh"), *ROOT.glob("cluster/*.sh")])


# ---------------------------------------------------------------- the document


def _section(heading: str) -> str:
    text = DOC.read_text()
    start = text.index(f"\n## {heading}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


def _documented(heading: str) -> set[str]:
    """The backticked names in the first cell of every table row of a section."""
    names = set()
    for line in _section(heading).splitlines():
        if line.startswith("|"):
            first_cell = line.split("|")[1]
            names.update(re.findall(r"`([^`]+)`", first_cell))
    return names


# ---------------------------------------------------------------- what the code reads

# os.environ.get("X"), os.environ["X"], os.environ.setdefault("X", ...), os.getenv("X"),
# psutil's p.environ().get(X), each with a string or an UPPER_CASE constant.
_PY_READ = re.compile(
    r"""(?:environ(?:\(\))?\.(?:get|setdefault|pop)\(|environ\[|getenv\()\s*"""
    r"""(?:["']([A-Za-z_][A-Za-z0-9_]*)["']|([A-Z][A-Z0-9_]*)\b)"""
)


def _constants(path: Path) -> dict[str, str]:
    """Module-level `NAME = "VALUE"` string constants of one file."""
    found = {}
    for node in ast.parse(path.read_text()).body:
        if (
            isinstance(node, ast.Assign)
            and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str)
        ):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    found[target.id] = node.value.value
    return found


def _python_env_names() -> tuple[set[str], set[str]]:
    """(names read, UPPER_CASE constants that could not be resolved) in the Python
    sources, plus every string literal that is an env-prefixed name (the environments
    that bench/ and the builders hand to Ray: what is set there is read by something)."""
    files = _python_files()
    own = {path: _constants(path) for path in files}
    # An imported constant: resolved when every file that defines it agrees on its value.
    values: dict[str, set[str]] = {}
    for constants in own.values():
        for name, value in constants.items():
            values.setdefault(name, set()).add(value)
    names, unresolved = set(), set()
    for path in files:
        text = path.read_text()
        for literal, constant in _PY_READ.findall(text):
            if literal:
                names.add(literal)
            elif constant in own[path]:
                names.add(own[path][constant])
            elif len(values.get(constant, ())) == 1:
                names.update(values[constant])
            else:
                unresolved.add(f"{path.relative_to(ROOT)}: {constant}")
        for node in ast.walk(ast.parse(text)):
            is_string = isinstance(node, ast.Constant) and isinstance(node.value, str)
            if is_string and _ENV_NAME.match(node.value):
                names.add(node.value)
    return names, unresolved


def _shell_env_names() -> set[str]:
    """Environment variables the shell scripts read or export: `${X:-...}`, `${X-...}`,
    `${X:+...}` of any upper-case name; `$X` / `${X}` of a prefixed name the script does
    not itself assign as a plain shell variable; every name an `export` sets; reads in
    embedded Python (heredocs)."""
    names = set()
    for path in _shell_files():
        text = path.read_text().replace("\\\n", " ")
        names.update(re.findall(r"\$\{([A-Z][A-Z0-9_]*):?[-+]", text))
        plain = set(re.findall(r"^\s*(?:local\s+)?([A-Z][A-Z0-9_]*)=", text, re.M))
        for statement in re.findall(r"\bexport\s+([^;\n]*)", text):
            names.update(re.findall(r"(?:^|\s)([A-Z][A-Z0-9_]*)=", statement))
        for name in re.findall(r"\$\{?([A-Z][A-Z0-9_]*)", text):
            if name.startswith(ENV_PREFIXES) and name not in plain:
                names.add(name)
        names.update(a or b for a, b in _PY_READ.findall(text))
    return names


def _env_file_names() -> set[str]:
    text = (ROOT / "scripts" / "single_node.env").read_text()
    return set(re.findall(r"^([A-Za-z_][A-Za-z0-9_]*)=", text, re.M))


def _config_env_names() -> set[str]:
    """Variables the configs set: `runtime_env.env_vars` of the Serve configs and the
    `env:` lists of the KubeRay manifest."""
    names: set[str] = set()

    def walk(node: object) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "env_vars" and isinstance(value, dict):
                    names.update(value)
                if key == "env" and isinstance(value, list):
                    names.update(e["name"] for e in value if isinstance(e, dict) and "name" in e)
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    configs = ["serve_config.yaml", "serve_config.gpu.yaml", "cluster/local_config.yaml"]
    for name in [*configs, "cluster/rayservice.yaml"]:
        for document in yaml.safe_load_all((ROOT / name).read_text()):
            walk(document)
    return names


# ---------------------------------------------------------------- config models


def _config_models() -> list[type[BaseModel]]:
    """The ingress's args model and each task's (every ModelAppConfig subclass that a
    deployments/<task>/config.py defines)."""
    models: list[type[BaseModel]] = [IngressConfig]
    for path in sorted(ROOT.glob("deployments/*/config.py")):
        module = importlib.import_module(f"deployments.{path.parent.name}.config")
        models += [
            obj
            for obj in vars(module).values()
            if isinstance(obj, type)
            and issubclass(obj, ModelAppConfig)
            and obj is not ModelAppConfig
            and obj.__module__ == module.__name__
        ]
    return models


def _nested(annotation: object, path: str) -> Iterator[tuple[type[BaseModel], str]]:
    """The pydantic models inside a field's annotation, each with the prefix its
    fields get: `path.` directly or in an Optional, `path[].` inside a list or tuple."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield annotation, f"{path}."
        return
    origin = typing.get_origin(annotation)
    if origin is None:
        return
    container = origin in (list, tuple, set, frozenset) or origin is typing.Sequence
    for arg in typing.get_args(annotation):
        if arg is Ellipsis:
            continue
        if container:
            for model, _ in _nested(arg, path):
                yield model, f"{path}[]."
        elif origin is not dict:  # Optional / Union: the same prefix
            yield from _nested(arg, path)


def _fields(model: type[BaseModel], prefix: str = "") -> Iterator[str]:
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        yield path
        for nested, nested_prefix in _nested(field.annotation, path):
            yield from _fields(nested, nested_prefix)


# ---------------------------------------------------------------- the tests


def test_every_environment_variable_is_documented():
    python_names, unresolved = _python_env_names()
    assert not unresolved, f"environment reads through a constant not found: {unresolved}"
    read = python_names | _shell_env_names() | _env_file_names() | _config_env_names()
    read.add(AuthConfig().api_keys_env)
    missing = sorted(read - _documented("Environment variables"))
    assert not missing, (
        f"read or set by the code, the scripts or the configs but not in "
        f"docs/configuration.md '## Environment variables': {missing}"
    )


def test_every_config_key_is_documented():
    keys = {key for model in _config_models() for key in _fields(model)}
    missing = sorted(keys - _documented("Config keys"))
    assert not missing, (
        f"fields of the config models not in docs/configuration.md '## Config keys': {missing}"
    )


def test_the_scan_finds_what_it_should():
    """The scanners themselves: known reads of each kind are found, so a broken regex
    cannot pass the tests above by finding nothing."""
    python_names, _ = _python_env_names()
    assert {"OPENAI_SERVE_CACHE", "OPENAI_SERVE_HAPROXY_BINARY"} <= python_names
    assert "OPENAI_SERVE_GLOO_ONE_DEVICE" in python_names  # through a module constant
    shell = _shell_env_names()
    assert {"OPENAI_SERVE_HAPROXY", "RAY_PORT", "GPU", "EXTRAS", "RAY_AUTH_MODE"} <= shell
    assert "OPENAI_SERVE_RAY_TOKEN_FILE" not in shell  # a plain shell variable
    assert "RAY_SERVE_CONTROL_LOOP_INTERVAL_S" in _env_file_names()
    keys = {key for model in _config_models() for key in _fields(model)}
    assert {"auth.enabled", "bounds.schemas.max_depth", "adapters[].source"} <= keys
    assert {"batching.max_batch_images", "engine.pooling", "limits.max_tokens"} <= keys
