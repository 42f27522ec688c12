"""Ray is never reachable without its token: a head started the way scripts/serve.sh
starts one (scripts/ray_head.sh) refuses a client without the token or with a wrong
one, answers one with it, binds no socket off loopback, and its gRPC and dashboard
ports refuse an unauthenticated peer even on loopback."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pytest
from servers import free_port  # bench/, on pytest's pythonpath

from tests.cluster.listeners import call_without_token, grpc_channel, listening, ray_grpc_methods

ROOT = Path(__file__).resolve().parents[2]
HEAD_SCRIPT = ROOT / "scripts" / "ray_head.sh"
CONNECT = (
    "import ray, sys\n"
    "try:\n"
    "    ray.init(address=sys.argv[1])\n"
    "except Exception as e:\n"
    "    print('REFUSED', type(e).__name__); sys.exit(3)\n"
    "print('CONNECTED', int(ray.cluster_resources().get('CPU', 0)))\n"
)


def _env_without_ray_auth(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
    env["HOME"] = str(home)  # no ~/.ray/auth_token to fall back on
    env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # reach the head at 127.0.0.1 itself
    return env


@pytest.fixture(scope="module")
def head():
    """A one-node head from scripts/ray_head.sh, with a token file of its own."""
    state = Path(tempfile.mkdtemp(prefix="osa-", dir="/tmp"))  # short: unix sockets
    token = state / "token"
    port, dashboard_port = free_port(), free_port()
    env = {
        **os.environ,
        "RAY_AUTH_TOKEN_PATH": str(token),
        "RAY_PORT": str(port),
        "RAY_NUM_CPUS": "1",
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    }
    env.pop("RAY_AUTH_MODE", None)
    log = (state / "head.log").open("w")
    proc = subprocess.Popen(
        [str(HEAD_SCRIPT), f"--temp-dir={state}/ray", f"--dashboard-port={dashboard_port}"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    address = f"127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while (
            subprocess.run(
                [str(ROOT / ".venv/bin/ray"), "status", f"--address={address}"],
                env={**env, "RAY_AUTH_MODE": "token"},
                capture_output=True,
            ).returncode
            != 0
        ):
            assert proc.poll() is None, (state / "head.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "the head did not come up"
            time.sleep(1)
        yield {
            "address": address,
            "token": token,
            "state": state,
            "proc": proc,
            "dashboard_port": dashboard_port,
            "env": {**env, "RAY_AUTH_MODE": "token"},
        }
    finally:
        # SIGTERM to `ray start --block` alone: it drains the node through the GCS and
        # then stops the processes it started (~3 s). The whole group at once takes the
        # GCS down first, and the drain then waits 30 s for it.
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            pass
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # whatever is left of the group
        log.close()
        shutil.rmtree(state, ignore_errors=True)


def _connect(env: dict[str, str], address: str) -> subprocess.CompletedProcess[str]:
    return _connect_all({"one": env}, address)["one"]


def _connect_all(
    envs: dict[str, dict[str, str]], address: str
) -> dict[str, subprocess.CompletedProcess[str]]:
    """Runs one client per environment, all at once: a refused client waits ~20 s for
    Ray's client to give up, so the refusals run side by side rather than in turn."""
    procs = {
        name: subprocess.Popen(
            [sys.executable, "-c", CONNECT, address],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, env in envs.items()
    }
    done = {}
    for name, proc in procs.items():
        try:
            out, err = proc.communicate(timeout=180)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        done[name] = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    return done


@pytest.fixture(scope="module")
def refused(head, tmp_path_factory) -> dict[str, subprocess.CompletedProcess[str]]:
    """A client with no token and one with a wrong token, run side by side."""
    home = tmp_path_factory.mktemp("client-home")
    wrong = home / "wrong"
    wrong.write_text("0" * 64)
    without = _env_without_ray_auth(home)
    return _connect_all(
        {
            "no token": without,
            "wrong token": {
                **without,
                "RAY_AUTH_MODE": "token",
                "RAY_AUTH_TOKEN_PATH": str(wrong),
            },
        },
        head["address"],
    )


def test_token_file_is_owner_only(head):
    assert head["token"].stat().st_mode & 0o777 == 0o600
    assert len(head["token"].read_text().strip()) >= 32


def test_client_without_token_is_refused(refused):
    p = refused["no token"]
    assert p.returncode == 3 and "REFUSED" in p.stdout, p.stdout + p.stderr[-2000:]
    assert "Authentication token is missing or incorrect" in p.stderr


def test_client_with_wrong_token_is_refused(refused):
    p = refused["wrong token"]
    assert p.returncode == 3 and "REFUSED" in p.stdout, p.stdout + p.stderr[-2000:]


def test_client_with_token_connects(head):
    p = _connect(head["env"], head["address"])
    assert p.returncode == 0 and "CONNECTED 1" in p.stdout, p.stdout + p.stderr[-2000:]


def test_no_ray_socket_off_loopback(head):
    sockets = listening(head["proc"].pid)
    assert len(sockets) >= 6, sockets  # GCS, raylet, agents, client server, dashboard
    assert [s for s in sockets if not s.loopback] == []


def test_grpc_ports_refuse_an_unauthenticated_peer(head):
    """Every gRPC method Ray defines, called without a token on every listening port:
    none answers OK, and the GCS, the raylet and the client server answer
    UNAUTHENTICATED."""
    import grpc

    methods = ray_grpc_methods()
    assert len(methods) > 50
    gcs_port = int(head["address"].rsplit(":", 1)[1])
    unauthenticated: dict[int, str] = {}
    for s in listening(head["proc"].pid):
        channel = grpc_channel("127.0.0.1", s.port)
        if channel is None:
            continue  # not an HTTP/2 server (the dashboard's and agents' HTTP ports)
        for method in methods:
            code = call_without_token(channel, method)
            if code is None:
                pytest.fail(f"{s.name} on port {s.port} answered {method} without a token")
            if code == grpc.StatusCode.UNAUTHENTICATED:
                unauthenticated[s.port] = s.name
        channel.close()
    assert gcs_port in unauthenticated
    assert "raylet" in unauthenticated.values()


def test_dashboard_refuses_an_unauthenticated_peer(head):
    url = f"http://127.0.0.1:{head['dashboard_port']}/api/jobs/"
    assert httpx.get(url, timeout=10).status_code == 401
    wrong = httpx.get(url, timeout=10, headers={"Authorization": "Bearer " + "0" * 64})
    assert wrong.status_code in (401, 403)
    token = head["token"].read_text().strip()
    ok = httpx.get(url, timeout=10, headers={"Authorization": f"Bearer {token}"})
    assert ok.status_code == 200, ok.text[:500]
