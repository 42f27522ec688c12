"""What a Ray started by this project listens on, and whether a peer without Ray's token
gets anything there: the listening TCP sockets of a process tree, and gRPC probes made
without a token (tests/cluster/test_ray_auth.py, tests/cluster/test_serve_run.py)."""

from __future__ import annotations

import importlib
import ipaddress
import pkgutil
import socket
from dataclasses import dataclass
from pathlib import Path

import psutil

# One method of the gRPC server every Serve replica runs for the calls between
# deployments (Ray 2.60 serve/_private/replica.py, `_on_initialized`:
# `add_ASGIServiceServicer_to_server`, bound to "[::]:0").
SERVE_REPLICA_METHOD = "/ray.serve.ASGIService/HandleRequest"


@dataclass(frozen=True)
class Listener:
    ip: str
    port: int
    name: str  # the process's name (e.g. "raylet", "gcs_server")
    title: str  # what it runs: Ray's workers name themselves ("ray::ServeReplica:app:dep"),
    # a Python process by its script ("python dashboard.py"), a binary by its file name
    pid: int

    @property
    def loopback(self) -> bool:
        return loopback(self.ip)


def listening(root_pid: int) -> list[Listener]:
    """Every listening TCP socket of `root_pid` and its descendants, once per address and
    port (a socket shared by a parent and a child it forked is listed for the first of
    them found, the parent)."""
    root = psutil.Process(root_pid)
    out: dict[tuple[str, int], Listener] = {}
    for proc in [root, *root.children(recursive=True)]:
        try:
            title = _title(proc.cmdline()) or proc.name()
            for c in proc.net_connections(kind="tcp"):
                if c.status == psutil.CONN_LISTEN:
                    key = (c.laddr.ip, c.laddr.port)
                    out.setdefault(key, Listener(*key, proc.name(), title, proc.pid))
        except psutil.NoSuchProcess:
            continue
    return sorted(out.values(), key=lambda s: (s.name, s.port))


def _title(cmdline: list[str]) -> str:
    if not cmdline:
        return ""
    if Path(cmdline[0]).name.startswith("python"):
        if "-m" in cmdline[1:-1]:
            return f"python -m {cmdline[cmdline.index('-m') + 1]}"
        # Its script (a console script such as `serve` has no .py), else its first argument.
        args = cmdline[1:]
        script = next((a for a in args if a.endswith(".py")), args[0] if args else "")
        return f"python {Path(script).name}".strip()
    return Path(cmdline[0]).name


def loopback(ip: str) -> bool:
    address = ipaddress.ip_address(ip)
    mapped = getattr(address, "ipv4_mapped", None)
    return (mapped or address).is_loopback


def outward_ip() -> str | None:
    """An IPv4 address of this machine that is not loopback (where a peer on the network
    would connect), or None on a machine without one."""
    for addresses in psutil.net_if_addrs().values():
        for a in addresses:
            if a.family == socket.AF_INET and not loopback(a.address):
                return str(a.address)
    return None


def ray_grpc_methods() -> list[str]:
    """Every RPC of Ray's generated gRPC services (as '/package.Service/Method')."""
    import ray.core.generated as generated

    methods = set()
    for info in pkgutil.iter_modules(generated.__path__):
        if info.name.endswith("_pb2_grpc"):
            module = importlib.import_module(f"ray.core.generated.{info.name}")
            source = Path(str(module.__file__)).read_text()
            methods.update(part.split("'")[0] for part in source.split("'/ray.rpc.")[1:])
    return sorted(f"/ray.rpc.{m}" for m in methods)


def grpc_channel(host: str, port: int, timeout_s: float = 2):
    """A plaintext gRPC channel to host:port, no token, or None when no HTTP/2 server
    answers there (Ray's HTTP ports: the dashboard's, the agents', metrics)."""
    import grpc

    target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    # Straight to the port, never through an http_proxy of the environment.
    channel = grpc.insecure_channel(target, options=[("grpc.enable_http_proxy", 0)])
    try:
        grpc.channel_ready_future(channel).result(timeout=timeout_s)
    except grpc.FutureTimeoutError:
        channel.close()
        return None
    return channel


def call_without_token(channel, method: str):
    """The status of one unary call of `method` (an empty request, no token), or None
    when it answered OK."""
    import grpc

    try:
        channel.unary_unary(method)(b"", timeout=5)
    except grpc.RpcError as exc:
        return exc.code()
    return None
