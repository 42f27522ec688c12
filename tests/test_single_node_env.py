"""scripts/single_node.env, the embedded default's background periods: the shell that
scripts/serve.sh sources and the benchmark's reader (bench/servers.py) see the same
values, and a value already in the environment wins in the shell."""

from __future__ import annotations

import json
import os
import subprocess
import sys
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


# Where the installed Ray reads each setting of single_node.env: "module:attribute" of
# the constant the variable sets at import, and of each reader that holds it otherwise (a
# `from ... import NAME` copy, or a module reference it reads through at run time).
RAY_READERS = {
    # The controller's `await asyncio.sleep(CONTROL_LOOP_INTERVAL_S)` between passes.
    "RAY_SERVE_CONTROL_LOOP_INTERVAL_S": [
        "ray.serve._private.constants:CONTROL_LOOP_INTERVAL_S",
        "ray.serve._private.controller:CONTROL_LOOP_INTERVAL_S",
    ],
    # Every replica's and every handle's router's cached-metrics period.
    "RAY_SERVE_METRICS_EXPORT_INTERVAL_MS": [
        "ray.serve._private.constants:RAY_SERVE_METRICS_EXPORT_INTERVAL_MS",
        "ray.serve._private.replica:RAY_SERVE_METRICS_EXPORT_INTERVAL_MS",
        "ray.serve._private.router:RAY_SERVE_METRICS_EXPORT_INTERVAL_MS",
    ],
    # The log monitor re-globs every pass below this many files; 0: never below it.
    "RAY_LOG_MONITOR_MANY_FILES_THRESHOLD": [
        "ray._private.log_monitor:RAY_LOG_MONITOR_MANY_FILES_THRESHOLD",
    ],
    # ...and otherwise once per this period.
    "LOG_NAME_UPDATE_INTERVAL_S": ["ray._private.log_monitor:LOG_NAME_UPDATE_INTERVAL_S"],
    # The dashboard agent's reporter sleeps `reporter_consts.REPORTER_UPDATE_INTERVAL_MS`.
    "REPORTER_UPDATE_INTERVAL_MS": [
        "ray.dashboard.modules.reporter.reporter_consts:REPORTER_UPDATE_INTERVAL_MS",
        "ray.dashboard.modules.reporter.reporter_agent:reporter_consts.REPORTER_UPDATE_INTERVAL_MS",
    ],
    # The dashboard head's `_record_dashboard_metrics` loop period (read at its import).
    "METRICS_RECORD_INTERVAL_S": [
        "ray.dashboard.consts:METRICS_RECORD_INTERVAL_S",
        "ray.dashboard.head:dashboard_consts.METRICS_RECORD_INTERVAL_S",
    ],
}

# Imports each module in a fresh interpreter (Ray reads these variables once, at import)
# and prints what each "module:attribute" holds, or why it could not be read.
_PROBE = """
import importlib, json, sys
out = {}
for spec in json.loads(sys.argv[1]):
    module, _, path = spec.partition(":")
    try:
        value = importlib.import_module(module)
        for name in path.split("."):
            value = getattr(value, name)
        out[spec] = {"value": value}
    except Exception as exc:
        out[spec] = {"error": f"{type(exc).__name__}: {exc}"}
print(json.dumps(out))
"""


def _ray_reads(settings: dict[str, str]) -> tuple[dict[str, dict], dict[str, dict]]:
    """What RAY_READERS hold with `settings` in the environment, and without them (Ray's
    defaults), each in its own interpreter; the two run side by side."""
    specs = json.dumps([spec for readers in RAY_READERS.values() for spec in readers])
    base = {k: v for k, v in os.environ.items() if k not in settings and k not in RAY_READERS}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _PROBE, specs],
            env=env,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for env in ({**base, **settings}, base)
    ]
    results = []
    for proc in procs:
        try:
            out, err = proc.communicate(timeout=50)
        finally:
            proc.kill()
        assert proc.returncode == 0, err[-3000:]
        results.append(json.loads(out.strip().splitlines()[-1]))
    return results[0], results[1]


def test_ray_reads_every_setting_of_the_file():
    """Each line of single_node.env changes what the installed Ray runs with: its
    variable still sets the constant Ray's code reads, to the file's value, which is not
    Ray's default. A Ray upgrade that renames, moves or drops one fails here by name."""
    env = servers.read_env_file(ENV_FILE)
    unmapped = sorted(set(env) - set(RAY_READERS))
    assert not unmapped, (
        f"single_node.env sets {unmapped}: add where Ray reads each to RAY_READERS "
        "(grep Ray's site-packages for the name), or drop the line if nothing does"
    )
    stale = sorted(set(RAY_READERS) - set(env))
    assert not stale, f"RAY_READERS lists {stale}, which single_node.env no longer sets"

    shipped, default = _ray_reads(env)
    problems = []
    for key, readers in RAY_READERS.items():
        for spec in readers:
            got, ray_default = shipped[spec], default[spec]
            if "error" in got:
                problems.append(f"{key}: Ray no longer has {spec} ({got['error']})")
            elif not isinstance(got["value"], int | float) or got["value"] != float(env[key]):
                problems.append(
                    f"{key}={env[key]} is not read by this Ray: {spec} is {got['value']!r} "
                    "with it set"
                )
            elif ray_default.get("value") == got["value"]:
                problems.append(
                    f"{key}={env[key]} changes nothing: {spec} is {got['value']!r} without "
                    "it too (Ray's default)"
                )
    assert not problems, "\n".join(problems)
