"""Says where the API is once it answers, then which models are still starting and
when each is ready (scripts/serve.sh runs it beside `serve run`).

    .venv/bin/python scripts/announce.py [CONFIG]     # default: serve_config.yaml

It polls GET /v1/openai/models at the config's http_options (an API key from
$OPENAI_API_KEY, if the config turns keys on) and exits once every model runs.
"""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.error
import urllib.request
from typing import Any

import yaml

POLL_S = 2.0
GIVE_UP_S = 3600.0


def base_url(config_path: str) -> str:
    """http://HOST:PORT of the config's HTTP proxy (Serve's defaults where unset)."""
    with open(config_path) as f:
        http = (yaml.safe_load(f) or {}).get("http_options") or {}
    host = http.get("host") or "127.0.0.1"
    if host in ("0.0.0.0", "::"):
        host = "127.0.0.1"
    return f"http://{host}:{http.get('port') or 8000}"


def fetch_models(base: str) -> list[dict[str, Any]] | None:
    """The model objects, or None while the API does not answer.

    Raises:
        PermissionError: the API wants a key ($OPENAI_API_KEY) it did not get.
    """
    request = urllib.request.Request(f"{base}/v1/openai/models")
    key = os.environ.get("OPENAI_API_KEY")
    if key:
        request.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            data: list[dict[str, Any]] = json.load(response)["data"]
            return data
    except urllib.error.HTTPError as e:
        if e.code == 401:
            raise PermissionError from None
        return None  # the proxy answers before the ingress is up (404, 503)
    except (OSError, ValueError, KeyError):
        return None


def by_application(models: list[dict[str, Any]]) -> dict[str, tuple[str, str | None]]:
    """deploy_id → (its plainest name, why it does not serve yet or None)."""
    out: dict[str, tuple[str, str | None]] = {}
    for m in models:
        name, _ = out.get(m["deploy_id"], (None, None))
        if name is None or (":" in name and ":" not in m["id"]):
            name = m["id"]
        # RUNNING serves, even below its target or scaled to zero (a request starts one).
        ready = m.get("status") == "RUNNING"
        why = None if ready else (m.get("status_message") or m.get("status") or "starting")
        out[m["deploy_id"]] = (name, why)
    return out


def main(argv: list[str]) -> int:
    base = base_url(argv[1] if len(argv) > 1 else "serve_config.yaml")
    started = time.monotonic()
    models = None
    while models is None:
        if time.monotonic() - started > GIVE_UP_S:
            return 1
        try:
            models = fetch_models(base)
        except PermissionError:
            print(f"API up at {base}/v1/openai (set OPENAI_API_KEY to see its models)")
            return 0
        if models is None:
            time.sleep(POLL_S)
    print(
        f"\nAPI up after {time.monotonic() - started:.0f} s:\n"
        f"  playground  {base}/\n"
        f"  API         {base}/v1/openai   (models: {base}/v1/openai/models)",
        flush=True,
    )
    waiting = {d: v for d, v in by_application(models).items() if v[1] is not None}
    for name, why in waiting.values():
        print(f"  starting    {name}: {why}", flush=True)
    failed = 0
    while waiting and time.monotonic() - started < GIVE_UP_S:
        time.sleep(POLL_S)
        now = by_application(fetch_models(base) or [])
        for deploy_id, (name, _) in list(waiting.items()):
            if deploy_id not in now:
                continue
            why = now[deploy_id][1]
            if why is None:
                print(f"  ready       {name} ({time.monotonic() - started:.0f} s)", flush=True)
            elif why.startswith(("deploy failed", "unhealthy")):
                print(f"  failed      {name}: {why}", flush=True)
                failed += 1
            else:
                continue
            del waiting[deploy_id]
    if not waiting and not failed:
        print("All models are ready.", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
