"""A real PostgreSQL for tests (tests/conftest.py's `postgres_url`): Debian's `postgresql`
server (scripts/install_test_tools.sh installs it), a throwaway cluster in a temporary
folder, listening on 127.0.0.1 only (plus a unix socket in that folder), on a free port,
with password authentication and a random password; stopped and removed at teardown.
No mock, no container.

initdb refuses to run as root: as root, every server command runs as the unprivileged
user `postgres` (which Debian's package creates) through `runuser`, in a folder that
user owns; as anyone else, as that user.
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from servers import free_port  # bench/, on pytest's pythonpath

USER, DATABASE = "openai_serve", "openai_serve_test"
SERVER_USER = "postgres"  # who runs the server when we are root


def bindir() -> Path | None:
    """Where initdb and pg_ctl are: `pg_config --bindir` (when it has them), else the
    highest /usr/lib/postgresql/<version>/bin, else PATH (e.g. /usr/local/bin links)."""
    candidates: list[Path] = []
    if shutil.which("pg_config"):
        out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True)
        if out.returncode == 0 and out.stdout.strip():
            candidates.append(Path(out.stdout.strip()))
    versions = glob.glob("/usr/lib/postgresql/*/bin")
    versions.sort(key=lambda p: int(Path(p).parent.name) if Path(p).parent.name.isdigit() else 0)
    candidates += [Path(p) for p in reversed(versions)]
    if shutil.which("pg_ctl"):
        candidates.append(Path(shutil.which("pg_ctl") or "").parent)
    for directory in candidates:
        if all((directory / tool).is_file() for tool in ("initdb", "pg_ctl", "postgres")):
            return directory
    return None


@contextmanager
def postgres_server() -> Iterator[str]:
    """Starts a PostgreSQL server; yields its `postgresql+asyncpg://` URL."""
    bin_path = bindir()
    if bin_path is None:
        raise RuntimeError(
            "no PostgreSQL server found (initdb, pg_ctl): run scripts/install_test_tools.sh "
            "(Debian's postgresql)"
        )
    as_root = os.getuid() == 0
    root = Path(tempfile.mkdtemp(prefix="oss-pg-"))  # short: the socket's path is bounded
    if as_root:
        try:
            server_user = pwd.getpwnam(SERVER_USER)
        except KeyError:
            raise RuntimeError(
                f"initdb refuses root, and there is no user {SERVER_USER} to run PostgreSQL "
                "as (Debian's postgresql makes it): run the tests as another user"
            ) from None
        os.chown(root, server_user.pw_uid, server_user.pw_gid)

    password = secrets.token_hex(16)

    def run(*args: str) -> None:
        command = [str(bin_path / args[0]), *args[1:]]
        if as_root:
            command = ["runuser", "-u", SERVER_USER, "--", *command]
        env = {**os.environ, "PGPASSWORD": password}  # createdb's; runuser passes it on
        done = subprocess.run(
            command, cwd=root, env=env, capture_output=True, text=True, timeout=30
        )
        if done.returncode != 0:
            raise RuntimeError(f"{args[0]} failed:\n{done.stdout}{done.stderr}")

    data, pwfile = root / "data", root / "pwfile"
    pwfile.write_text(password + "\n")
    if as_root:
        os.chown(pwfile, server_user.pw_uid, server_user.pw_gid)
    pwfile.chmod(0o600)
    port = free_port()
    run("initdb", "-D", str(data), "-U", USER, "--pwfile", str(pwfile), "--auth=scram-sha-256")
    pwfile.unlink()
    with (data / "postgresql.conf").open("a") as conf:
        # Loopback and our own socket folder only; durability off (a throwaway cluster).
        conf.write(
            f"listen_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = '{root}'\n"
            "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
        )
    try:
        run("pg_ctl", "start", "-w", "-t", "30", "-D", str(data), "-l", str(root / "server.log"))
        run("createdb", "-h", str(root), "-p", str(port), "-U", USER, DATABASE)
        yield f"postgresql+asyncpg://{USER}:{password}@127.0.0.1:{port}/{DATABASE}"
    finally:
        try:
            run("pg_ctl", "stop", "-m", "immediate", "-D", str(data))
        except RuntimeError:
            pass  # it never started
        shutil.rmtree(root, ignore_errors=True)
