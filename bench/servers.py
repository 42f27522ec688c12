"""The three servers bench/llm_bench.py compares, started on loopback one at a time.

    vllm    python -m vllm.entrypoints.openai.api_server (what `vllm serve` runs)
    rayllm  Ray Serve LLM: ray.serve.llm:build_openai_app, by `serve run CONFIG`
            (`rayllm-fast`: the same in its high-throughput mode, RAYLLM_FAST_ENV)
    ours    this project: ingress + deployments.llm app, by `serve run CONFIG`

All three load the same model directory with the same engine kwargs and the same
engine environment (KV cache size, thread binding, loopback IP). The Ray-based two
get their own `ray start --head --block` cluster on 127.0.0.1 with its own temp dir
and free ports, so nothing touches any other Ray on the machine (no `ray stop`, which
would stop every Ray of this user). Every process a server starts inherits a unique
LLM_BENCH_RUN marker in its environment; stopping a server signals its process
groups, then looks for processes still carrying the marker (the leak check) and
kills those by pid.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil
import yaml

REPO = Path(__file__).resolve().parent.parent
SERVERS = ("vllm", "rayllm", "ours")
# What a plain `llm_bench.py` run compares, baselines first: `vllm serve` with our engine
# layout (one process computing on every core: the limit of a serving path, issue #34),
# `vllm serve` as users run it, Ray Serve LLM, and ours as shipped.
DEFAULT_SERVERS = ("vllm-uniproc", "vllm", "rayllm", "ours")
# "ours" runs as scripts/serve.sh does by default: in Ray Serve's throughput mode
# (OURS_ENV), with the background periods of scripts/single_node.env. Not in the default
# run: "ours-classic", the fallback (RAY_SERVE_THROUGHPUT_OPTIMIZED=0), and "ours-ha", ours behind
# Ray Serve's HAProxy ingress (HAProxy in C instead of the Python proxy actor, the ingress
# replica serving HTTP itself; OPENAI_SERVE_HAPROXY=1).
OURS_ENV = {
    "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
    "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "1",
}


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines of an env file such as scripts/single_node.env (`#` lines and
    blank lines skipped, nothing quoted), as scripts/serve.sh reads it."""
    env = {}
    for line in path.read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.isidentifier():
            raise ValueError(f"{path.name}: not a KEY=VALUE line: {line!r}")
        env[key] = value
    return env


# The embedded default's background periods (docs/performance.md "Idle CPU"), which scripts/serve.sh
# exports: every `ours` server gets them, so the benchmark measures the default as
# shipped; "ours-raydefaults" leaves Ray's and Serve's own periods (runs before
# 2026-12-02 measured ours that way). Baselines keep Ray's defaults.
SINGLE_NODE_ENV = read_env_file(REPO / "scripts" / "single_node.env")
# Ray Serve LLM in its documented high-throughput mode: HAProxy, Serve's throughput
# mode and direct streaming (the LLM server is the ingress; HAProxy asks its request
# router which replica takes a request, then the replica answers the client itself).
RAYLLM_FAST_ENV = {
    "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
    "RAY_SERVE_ENABLE_HA_PROXY": "1",
    "RAY_SERVE_LLM_ENABLE_DIRECT_STREAMING": "1",
}


def haproxy_paths(folder: str) -> dict[str, str]:
    """Where Ray Serve keeps HAProxy's config, admin and metrics sockets and server state
    (each in a per-node subfolder): `folder`, made owner-only by whoever starts Ray, instead
    of Ray's /tmp/haproxy-serve, which the first local user to run Serve would own.
    Short on purpose: a socket path must stay under ~95 characters with the 56-character
    node id and HAProxy's `.PID.tmp` suffix."""
    return {
        "RAY_SERVE_HAPROXY_CONFIG_FILE_LOC": f"{folder}/haproxy.cfg",
        "RAY_SERVE_HAPROXY_SOCKET_PATH": f"{folder}/admin.sock",
        "RAY_SERVE_HAPROXY_METRICS_SOCKET_PATH": f"{folder}/metrics.sock",
        "RAY_SERVE_HAPROXY_SERVER_STATE_BASE": folder,
        "RAY_SERVE_HAPROXY_SERVER_STATE_FILE": f"{folder}/server-state",
    }


def private_folder(path: str) -> None:
    """Makes `path` owner-only (0700), or checks that it already is this user's alone."""
    os.makedirs(path, mode=0o700, exist_ok=True)
    st = os.lstat(path)
    if st.st_uid != os.getuid() or st.st_mode & 0o077:
        raise RuntimeError(f"{path} is not this user's alone")


# Ray Serve's HAProxy ingress as scripts/serve.sh runs it: through
# scripts/haproxy_guard.py (listeners on the API's own address, owner-only admin socket,
# OpenAI-shaped errors), with a 64 KB buffer so header sets up to the ingress's own limit
# (32 KB) reach the ingress and get its 431, and its files in the user's own folder.
HAPROXY_DIR = f"/tmp/oss-haproxy-{os.getuid()}"  # scripts/serve.sh's too
HAPROXY_ENV = {
    "RAY_SERVE_ENABLE_HA_PROXY": "1",
    "RAY_SERVE_HAPROXY_BINARY_PATH": str(REPO / "scripts" / "haproxy_guard.py"),
    "RAY_SERVE_HAPROXY_TUNE_BUFSIZE": "65536",
    **haproxy_paths(HAPROXY_DIR),
}
# What each variant changes on top of "ours" as shipped.
VARIANTS = {
    "ours-ha": ("ours", HAPROXY_ENV),
    "ours-classic": ("ours", {"RAY_SERVE_THROUGHPUT_OPTIMIZED": "0"}),
    # Without scripts/single_node.env: Ray's and Serve's background periods.
    "ours-raydefaults": ("ours", {}),
    "rayllm-fast": ("rayllm", RAYLLM_FAST_ENV),
    # vLLM's CPU engine as two processes (its default: a scheduler process spinning
    # while a worker process computes), where "ours" runs it as one (OURS_CPU_ENGINE_ENV).
    "ours-mp": ("ours", {"VLLM_ENABLE_V1_MULTIPROCESSING": "1"}),
    # `vllm serve` with its engine as one process too, as "ours" runs it.
    "vllm-uniproc": ("vllm", {"VLLM_ENABLE_V1_MULTIPROCESSING": "0"}),
    "ours-nohold": ("ours", {}),
    # The engine on the one thread Ray's num_cpus gives the replica (before cpu_threads).
    "ours-1thread": ("ours", {}),
}
# Arguments of our LLM application that a variant changes on top of "ours" as shipped.
VARIANT_APP_ARGS = {
    # Every engine step its own chunk, at any load (no stream_interval_ms hold).
    "ours-nohold": {"stream_interval_ms": 0},
    "ours-1thread": {"engine": {"cpu_threads": None}},
}
MARKER = "LLM_BENCH_RUN"


def ray_auth_env() -> dict[str, str]:
    """Ray's token authentication, as scripts/ray_auth.sh sets it up (that script
    makes the token once, owner-only): every Ray the benchmark starts keeps it on."""
    path = subprocess.run(
        ["bash", "-c", 'source scripts/ray_auth.sh && printf %s "$RAY_AUTH_TOKEN_PATH"'],
        cwd=REPO,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": path}


def free_port() -> int:
    """A free loopback port in 20000-29999, a range no Ray part draws from (workers take
    10002-19999, Serve's direct ingress 30000-31000, the rest the kernel's ephemeral ports),
    so nothing Ray starts later can take it first."""
    for port in random.sample(range(20000, 30000), 200):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port in 20000-29999")


def driver_handle(app: str):
    """A Serve handle for a synchronous script: its router in Serve's own thread, also
    where RAY_SERVE_THROUGHPUT_OPTIMIZED=1 (whose default router needs the caller's
    event loop)."""
    from ray import serve

    handle = serve.get_app_handle(app)
    if not handle.is_initialized:
        handle._init(_run_router_in_separate_loop=True)
    return handle


def start_local_serve(num_cpus: int = 4) -> int:
    """A new local Ray for the in-process benchmarks (token auth on, loopback, no
    dashboard, replica logs kept in Ray's files so stdout is the report) and Serve's
    HTTP proxy on a free loopback port; returns the port."""
    # Before Ray is imported: it reads its auth mode from the environment then.
    os.environ.update({"HF_HUB_OFFLINE": "1", "VLLM_HOST_IP": "127.0.0.1", **ray_auth_env()})
    import ray
    from ray import serve

    # "local": a new instance, even where a stale /tmp/ray/ray_current_cluster names one.
    ray.init(
        address="local",
        num_cpus=num_cpus,
        _node_ip_address="127.0.0.1",
        include_dashboard=False,
        configure_logging=False,
        log_to_driver=False,
        runtime_env={"env_vars": {"HF_HUB_OFFLINE": "1"}},
    )
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    return port


@dataclass
class ModelSpec:
    key: str  # "tiny" | "gemma"
    name: str  # the model id clients send
    source: str  # model_source, for the record
    path: Path  # the directory every server loads
    engine_kwargs: dict
    kv_cache_gib: int


# The engine layout of our CPU default (serve_config.yaml's Gemma entry): scheduler and
# model worker in one engine process, not vLLM's default pair of processes whose
# scheduler spins on the second core while the worker computes. Given to ours' model
# replica (not on a GPU); "ours-mp" is the other layout.
# And every gloo group of the engine on one device (deployments/vllm_plugin.py).
OURS_CPU_ENGINE_ENV = {"VLLM_ENABLE_V1_MULTIPROCESSING": "0", "OPENAI_SERVE_GLOO_ONE_DEVICE": "1"}


def engine_env(model: ModelSpec, threads_bind: str) -> dict[str, str]:
    """The environment every engine runs with, whichever server hosts it."""
    return {
        "VLLM_CPU_KVCACHE_SPACE": str(model.kv_cache_gib),
        "VLLM_CPU_OMP_THREADS_BIND": threads_bind,
        "VLLM_HOST_IP": "127.0.0.1",
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }


def _cli_flags(kwargs: dict) -> list[str]:
    flags: list[str] = []
    for k, v in kwargs.items():
        flag = "--" + k.replace("_", "-")
        if v is True:
            flags.append(flag)
        elif v is not False and v is not None:
            flags += [flag, str(v)]
    return flags


def _rayllm_config(model: ModelSpec, port: int, env: dict, gpu: bool, direct: bool) -> dict:
    llm_config = {
        "model_loading_config": {"model_id": model.name, "model_source": str(model.path)},
        "engine_kwargs": dict(model.engine_kwargs),
        "runtime_env": {"env_vars": env},
        "deployment_config": {"num_replicas": 1},
    }
    if not gpu:
        llm_config["accelerator_config"] = {"kind": "cpu"}  # else it asks for a GPU
    # The model replica's placement group takes the node's CPUs on a small machine; the
    # ingress holds no model and must schedule regardless. Direct streaming has no
    # ingress of its own (the LLM server is it) and refuses this setting.
    ingress = (
        {} if direct else {"ingress_deployment_config": {"ray_actor_options": {"num_cpus": 0}}}
    )
    return {
        "proxy_location": "HeadOnly",
        "http_options": {"host": "127.0.0.1", "port": port},
        "applications": [
            {
                "name": "rayllm",
                "route_prefix": "/",
                "import_path": "ray.serve.llm:build_openai_app",
                "args": {"llm_configs": [llm_config], **ingress},
            }
        ],
    }


def _ours_config(
    model: ModelSpec, port: int, env: dict, gpu: bool, app_args: dict | None = None
) -> dict:
    app_args = app_args or {}
    actor = {"num_cpus": 1, "runtime_env": {"env_vars": env}}
    if gpu:
        actor["num_gpus"] = 1
    return {
        "proxy_location": "HeadOnly",
        "http_options": {"host": "127.0.0.1", "port": port},
        "applications": [
            {
                "name": "openai",
                "route_prefix": "/",
                "import_path": "ingress.builder:build_app",
                "args": {"auth": {"enabled": False}},
            },
            {
                "name": f"bench-{model.key}",
                "route_prefix": None,
                "import_path": "deployments.llm.builder:build_app",
                "args": {
                    "model": model.name,
                    "version": "1",
                    "default": True,
                    "model_source": str(model.path),
                    # As serve_config.yaml runs its CPU engines: on every core.
                    "engine": {
                        "engine_kwargs": dict(model.engine_kwargs),
                        **({} if gpu else {"cpu_threads": "all"}),
                        **app_args.get("engine", {}),
                    },
                    "deployment": {"ray_actor_options": actor},
                    **{k: v for k, v in app_args.items() if k != "engine"},
                },
            },
        ],
    }


@dataclass
class Server:
    """One running server: its processes, URLs and logs."""

    kind: str
    model: ModelSpec
    threads_bind: str = "auto"
    gpu: bool = False
    ray_num_cpus: int = 4
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    procs: list[subprocess.Popen] = field(default_factory=list)
    workdir: Path | None = None
    port: int = 0
    # Extra environment for every process of this server (e.g. Ray Serve flags).
    extra_env: dict[str, str] = field(default_factory=dict)
    # Extra arguments of our LLM application (e.g. stream_interval_ms), ours only.
    app_args: dict = field(default_factory=dict)
    # The Ray node's metrics export port (the Ray-based servers), set by start().
    metrics_port: int = 0

    def __post_init__(self) -> None:
        base, env = VARIANTS.get(self.kind, (self.kind, {}))
        self.app = base  # which stack to start: vllm | rayllm | ours
        defaults: dict[str, str] = {}
        if base == "ours":
            shipped = {} if self.kind == "ours-raydefaults" else SINGLE_NODE_ENV
            defaults = {**shipped, **OURS_ENV}
        self.extra_env = {**defaults, **env, **self.extra_env}
        self.app_args = {**VARIANT_APP_ARGS.get(self.kind, {}), **self.app_args}

    @property
    def base_url(self) -> str:
        suffix = "/v1/openai" if self.app == "ours" else "/v1"
        return f"http://127.0.0.1:{self.port}{suffix}"

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(engine_env(self.model, self.threads_bind))
        env.update(
            {
                MARKER: self.run_id,
                **ray_auth_env(),
                # `ray start --node-ip-address 127.0.0.1` swaps a loopback address for
                # the machine's own; with this off, Ray keeps 127.0.0.1 (one node only).
                "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
                # Serve is already shut down when Ray stops: no drain to wait out.
                "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "5",
                "RAY_USAGE_STATS_ENABLED": "0",
                "VLLM_CACHE_ROOT": str(self.workdir / "vllm-cache"),
                "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")])),
                "PYTHONUNBUFFERED": "1",
            }
        )
        env.update(self.extra_env)
        if (
            env.get("RAY_SERVE_ENABLE_HA_PROXY") == "1"
            and "RAY_SERVE_HAPROXY_SERVER_STATE_BASE" in env
        ):
            private_folder(env["RAY_SERVE_HAPROXY_SERVER_STATE_BASE"])
        return env

    def model_env(self) -> dict[str, str]:
        """The model replica's environment (its actor's env_vars for Serve-based servers):
        the engine's, and for ours on CPU the engine layout as shipped unless the variant
        sets it."""
        env = engine_env(self.model, self.threads_bind)
        if self.app == "ours" and not self.gpu:
            env.update(OURS_CPU_ENGINE_ENV)
            env.update({k: v for k, v in self.extra_env.items() if k in OURS_CPU_ENGINE_ENV})
        return env

    def _spawn(self, args: list[str], log: str, label: str) -> subprocess.Popen:
        with open(self.workdir / log, "ab") as out:  # the child keeps its own copy
            p = subprocess.Popen(
                args,
                cwd=REPO,
                env=self._env(),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )  # own process group
        p.bench_label = label
        self.procs.append(p)
        return p

    def start(self) -> None:
        _unignore_sigint()
        # Short path: Ray's unix sockets live under the temp dir (107-char limit).
        self.workdir = Path(tempfile.mkdtemp(prefix=f"llmb-{self.kind[:4]}-", dir="/tmp"))
        self.port = free_port()
        py = sys.executable
        if self.app == "vllm":
            self._spawn(
                [
                    py,
                    "-m",
                    "vllm.entrypoints.openai.api_server",
                    "--model",
                    str(self.model.path),
                    "--served-model-name",
                    self.model.name,
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    *_cli_flags(self.model.engine_kwargs),
                ],
                "server.log",
                "vllm api_server",
            )
            return
        gcs_port = free_port()
        self.metrics_port = free_port()
        ray = str(Path(py).with_name("ray"))
        self._spawn(
            [
                ray,
                "start",
                "--head",
                "--block",
                "--node-ip-address",
                "127.0.0.1",
                "--port",
                str(gcs_port),
                "--num-cpus",
                str(self.ray_num_cpus),
                "--temp-dir",
                str(self.workdir / "ray"),
                "--include-dashboard",
                "false",
                "--disable-usage-stats",
                "--object-store-memory",
                "200000000",
                "--ray-client-server-port",
                str(free_port()),
                "--dashboard-agent-listen-port",
                str(free_port()),
                "--dashboard-agent-grpc-port",
                str(free_port()),
                "--runtime-env-agent-port",
                str(free_port()),
                "--metrics-export-port",
                str(self.metrics_port),
            ],
            "ray.log",
            "ray start",
        )
        self._wait_for_gcs(gcs_port, timeout_s=120)
        config = self.workdir / "serve_config.yaml"
        config.write_text(yaml.safe_dump(self.serve_config()))
        self._spawn(
            [
                str(Path(py).with_name("serve")),
                "run",
                "--address",
                f"127.0.0.1:{gcs_port}",
                str(config),
            ],
            "server.log",
            "serve run",
        )

    def serve_config(self) -> dict:
        """The config `serve run` gets (the Ray-based servers)."""
        env = self.model_env()
        if self.app == "rayllm":
            direct = self.extra_env.get("RAY_SERVE_LLM_ENABLE_DIRECT_STREAMING") == "1"
            return _rayllm_config(self.model, self.port, env, self.gpu, direct)
        return _ours_config(self.model, self.port, env, self.gpu, self.app_args)

    @property
    def metrics_url(self) -> str:
        """Prometheus text of the Ray node's metrics agent (the Ray-based servers)."""
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def _wait_for_gcs(self, port: int, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    time.sleep(3)  # the raylet registers just after the GCS listens
                    return
            except OSError:
                time.sleep(1)
        raise TimeoutError(f"ray start did not listen on {port} in {timeout_s} s")

    def check_alive(self) -> None:
        for p in self.procs:
            if p.poll() is not None:
                raise RuntimeError(
                    f"{self.kind}: {p.args[0]} exited with {p.returncode}\n{self.log_tail()}"
                )

    def log_tail(self, lines: int = 30) -> str:
        out = []
        for log in sorted(self.workdir.glob("*.log")) if self.workdir else ():
            text = log.read_text(errors="replace").splitlines()[-lines:]
            out.append(f"--- {log.name}\n" + "\n".join(text))
        return "\n".join(out)

    def wait_ready(self, timeout_s: float) -> float:
        """Polls the models route until it lists the model; returns seconds waited."""
        start = time.monotonic()
        while time.monotonic() - start < timeout_s:
            self.check_alive()
            try:
                r = httpx.get(f"{self.base_url}/models", timeout=5)
                if r.status_code == 200 and any(
                    m.get("id") == self.model.name for m in r.json().get("data", [])
                ):
                    return time.monotonic() - start
            except (httpx.HTTPError, ValueError):
                pass
            time.sleep(2)
        raise TimeoutError(f"{self.kind} not ready in {timeout_s} s\n{self.log_tail()}")

    def marked_processes(self) -> list[psutil.Process]:
        found = []
        for p in psutil.process_iter(["pid"]):
            try:
                if p.pid != os.getpid() and p.environ().get(MARKER) == self.run_id:
                    found.append(p)
            except (psutil.Error, OSError):
                continue
        return found

    def stop(self, grace_s: float = 30.0, settle_s: float = 20.0) -> dict:
        """Stops gracefully (SIGINT to `serve run`, which shuts Serve down; SIGTERM to
        the rest), in reverse start order, each within `grace_s` or killed; then kills
        what still carries the marker. Returns the leak check."""
        t0 = time.monotonic()
        steps = []
        for p in reversed(self.procs):
            t = time.monotonic()
            # The leader only: it shuts its own children down (`ray start --block`
            # drains the node; signalling its whole group kills the GCS first and
            # the drain then hangs). The group is killed if the leader overstays.
            sig = signal.SIGINT if p.bench_label == "serve run" else signal.SIGTERM
            try:
                os.kill(p.pid, sig)
            except ProcessLookupError:
                pass
            try:
                p.wait(timeout=grace_s)
                how = "exited"
            except subprocess.TimeoutExpired:
                how = "killed"
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                p.wait(timeout=10)
            steps.append(f"{p.bench_label}: {how} in {time.monotonic() - t:.1f} s")
        # Engines and Ray workers exit a moment after their parents.
        deadline = time.monotonic() + settle_s
        left = self.marked_processes()
        while left and time.monotonic() < deadline:
            time.sleep(1)
            left = self.marked_processes()
        after_graceful = [f"{p.pid}:{_name(p)}" for p in left]
        for p in left:
            try:
                p.kill()
            except psutil.Error:
                pass
        psutil.wait_procs(left, timeout=10)
        remaining = [f"{p.pid}:{_name(p)}" for p in self.marked_processes()]
        return {
            "stop_s": round(time.monotonic() - t0, 1),
            "steps": steps,
            "left_after_graceful_stop": after_graceful,
            "left_after_kill": remaining,
            "clean": not remaining,
        }

    def thread_binding(self) -> list[str]:
        """What vLLM logged about its OpenMP binding (e.g. 'core ids=[0]')."""
        found = []
        for log in self.workdir.glob("*.log") if self.workdir else ():
            for line in log.read_text(errors="replace").splitlines():
                for key in ("core ids=", "reserved_cpus="):
                    if key in line:
                        found.append(line[line.index(key) :].strip())
        return sorted(set(found))

    def cleanup_files(self) -> None:
        if self.workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)


def _unignore_sigint() -> None:
    """A benchmark started in the background (`cmd &`) inherits SIGINT ignored, and so
    would `serve run`, which then ignores the graceful stop. A handled (not ignored)
    signal is reset to the default in an exec'd child."""
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def _name(p: psutil.Process) -> str:
    try:
        return " ".join(p.cmdline())[:80] or p.name()
    except psutil.Error:
        return "?"
