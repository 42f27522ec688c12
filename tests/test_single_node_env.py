"""scripts/single_node.env, the embedded default's background periods: the shell that
scripts/serve.sh sources and the benchmark's reader (bench/servers.py) see the same
values, and a value already in the environment wins in the shell."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import servers

ROOT = Path(__file__).resolve().parents[1]
ENV_FILE = ROOT / "scripts" / "single_node.env"


def _sourced(preset: dict[str, str]) -> dict[str, str]:
    out = subprocess.run(
        ["bash", "-euc", "source scripts/single_node_env.sh; env -0"],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", **preset},
        capture_output=True,
        check=True,
    ).stdout.decode()
    return dict(item.split("=", 1) for item in out.split("\0") if item)


def test_the_shell_and_the_benchmark_read_the_same_values():
    env = servers.read_env_file(ENV_FILE)
    assert env["RAY_SERVE_CONTROL_LOOP_INTERVAL_S"] == "1"
    assert len(env) >= 5
    exported = _sourced({})
    assert {k: exported.get(k) for k in env} == env
    assert env == servers.SINGLE_NODE_ENV
    # Nothing but the file's keys is left behind by the loop.
    assert "key" not in exported and "value" not in exported


def test_a_value_already_in_the_environment_wins():
    exported = _sourced({"RAY_SERVE_CONTROL_LOOP_INTERVAL_S": "0.1"})
    assert exported["RAY_SERVE_CONTROL_LOOP_INTERVAL_S"] == "0.1"
    assert exported["REPORTER_UPDATE_INTERVAL_MS"] == "15000"


def test_the_benchmark_gives_them_to_ours_only():
    spec = servers.ModelSpec("tiny", "m", "src", ROOT, {}, 1)
    assert servers.Server("ours", spec).extra_env["RAY_SERVE_CONTROL_LOOP_INTERVAL_S"] == "1"
    assert (
        "RAY_SERVE_CONTROL_LOOP_INTERVAL_S"
        not in servers.Server("ours-raydefaults", spec).extra_env
    )
    assert "RAY_SERVE_CONTROL_LOOP_INTERVAL_S" not in servers.Server("vllm", spec).extra_env

    ha = servers.Server("ours-ha", spec).extra_env
    assert ha["RAY_SERVE_ENABLE_HA_PROXY"] == "1"
    folder = ha["RAY_SERVE_HAPROXY_SERVER_STATE_BASE"]  # the user's own, as serve.sh's
    assert ha["RAY_SERVE_HAPROXY_CONFIG_FILE_LOC"] == f"{folder}/haproxy.cfg"
    assert "RAY_SERVE_ENABLE_HA_PROXY" not in servers.Server("ours", spec).extra_env


def test_a_malformed_line_is_refused(tmp_path):
    bad = tmp_path / "x.env"
    bad.write_text("# fine\nNOT A LINE\n")
    with pytest.raises(ValueError, match=r"x\.env"):
        servers.read_env_file(bad)
