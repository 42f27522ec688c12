"""Which models exist, read from the Serve controller: serve_config.yaml is the only list.

Why the controller: every model application publishes its ModelCard in its
deployment's `user_config` (deployments/contract.py). The controller stores that
the moment the application is deployed, before any replica exists, so a model that
is still starting (or scaled to zero) is already known and routable, and a later
`serve deploy` that adds or removes an application shows up at the next refresh
without touching the ingress. No second list to keep in sync.

Why a model does not serve yet (`status_message`, ingress/status.py) comes from the
same details, plus the progress each STARTING replica publishes in Ray's internal KV
(deployments/progress.py): one multi-get per refresh, and none while every replica
runs.

Addressing (the model string a client sends):
    "NAME"             the version marked `default: true`, else the highest version
                       (a base model before an adapter)
    "NAME:VERSION"     that version (the version separator is the last ':')
    "deploy_id:ID"     the application named ID, whatever it serves
    "deploy_id:ID/V"   the LoRA adapter version V of application ID

LoRA adapters (docs/api.md "Versions as adapters"): an LLM application lists them in the
same `user_config`, and each becomes one more entry of that application, with its own
version (the card's `base_version` names the base's).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from deployments.contract import (
    ADAPTERS_KEY,
    MODEL_CARD_ENV,
    MODEL_CARD_KEY,
    PROGRESS_NAMESPACE,
    AdapterSpec,
    ModelCard,
    StartupProgress,
    progress_key,
)
from ingress.status import plain, status_message, unplaced

logger = logging.getLogger("ray.serve")

DEPLOY_ID_PREFIX = "deploy_id:"
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class CatalogEntry:
    deploy_id: str  # the Serve application name
    card: ModelCard
    status: str  # the application's Serve status: RUNNING, DEPLOYING, ...
    message: str
    running_replicas: int
    target_replicas: int
    # Why it does not serve at full strength, for clients; None when it does.
    status_message: str | None = None
    adapter: AdapterSpec | None = None  # the LoRA adapter this version is; None: the base
    # Serve's bound on one replica's requests in flight (None: Serve's default); what a
    # batch's share of the model's capacity is a share of (ingress/batches/).
    max_ongoing_requests: int | None = None

    @property
    def key(self) -> str:
        """Unique per version: the application name, plus '/VERSION' for an adapter."""
        return (
            self.deploy_id if self.adapter is None else f"{self.deploy_id}/{self.adapter.version}"
        )

    @property
    def limit_key(self) -> str:
        """Whose concurrency budget a request counts against: an adapter shares its
        base's unless it sets its own bound."""
        own = self.adapter is not None and self.adapter.max_concurrent_requests is not None
        return self.key if own else self.deploy_id


async def fetch_serve_details() -> dict[str, Any]:
    """The controller's view of all applications (the dict behind `serve status`
    and the dashboard's /api/serve/applications/). Ray has no public async call for
    it, so this private hop is kept to this one function."""
    from ray.serve.context import _get_global_client

    client = _get_global_client()
    if client is None:
        raise RuntimeError("Serve is not running on this cluster")
    details: dict[str, Any] = await client._controller.get_serve_instance_details.remote()
    return details


async def read_progress_kv(keys: list[str]) -> dict[str, bytes]:
    """The startup progress records under `keys` (deployments/progress.py writes
    them); the missing ones are left out. Ray's internal KV is private API; its
    async multi-get is one GCS round trip, kept to this one function."""
    from ray.experimental import internal_kv

    client: Any = internal_kv.global_gcs_client  # None in a process without Ray
    if client is None:
        return {}
    found = await client.async_internal_kv_multi_get(
        [k.encode() for k in keys], namespace=PROGRESS_NAMESPACE.encode(), timeout=5
    )
    return {k.decode(): v for k, v in found.items()}


def progress_keys(details: dict[str, Any]) -> list[str]:
    """Pure: the KV keys of the replicas that are starting with a worker (the only
    ones that can have published progress)."""
    return [
        progress_key(app_name, str(replica.get("replica_id")))
        for app_name, app in (details.get("applications") or {}).items()
        for dep in (app.get("deployments") or {}).values()
        for replica in dep.get("replicas") or []
        if plain(replica.get("state")) == "STARTING" and not unplaced(replica)
    ]


def entries_from_details(
    details: dict[str, Any], progress: dict[str, bytes] | None = None, now: float | None = None
) -> list[CatalogEntry]:
    """Pure: turns controller details into catalog entries (unit-tested).

    Args:
        details: the controller's application details.
        progress: startup progress records by KV key (`read_progress_kv`).
        now: the time (time.time() when None), to age replicas waiting for a worker.
    """
    now = time.time() if now is None else now
    out = []
    for app_name, app in (details.get("applications") or {}).items():
        for dep in (app.get("deployments") or {}).values():
            deployment_config = dep.get("deployment_config") or {}
            user_config = deployment_config.get("user_config") or {}
            if not isinstance(user_config, dict):
                user_config = {}
            raw_card = user_config.get(MODEL_CARD_KEY) or _env_card(deployment_config)
            if not raw_card:
                continue
            try:
                card = ModelCard.model_validate(raw_card)
            except ValueError:
                logger.warning("application %s has an unreadable model card", app_name)
                continue
            replicas = list(dep.get("replicas") or [])
            running = sum(1 for r in replicas if plain(r.get("state")) == "RUNNING")
            status = plain(app.get("status", ""))
            message = str(app.get("message") or dep.get("message") or "")
            target = int(dep.get("target_num_replicas") or 0)
            out.append(
                CatalogEntry(
                    deploy_id=app_name,
                    card=card,
                    status=status,
                    message=message,
                    running_replicas=running,
                    target_replicas=target,
                    max_ongoing_requests=deployment_config.get("max_ongoing_requests"),
                    status_message=status_message(
                        status=status,
                        running=running,
                        target=target,
                        serve_message=message,
                        required=dep.get("required_resources") or {},
                        replicas=replicas,
                        progress=_progress_of(app_name, replicas, progress or {}),
                        now=now,
                    ),
                )
            )
            base = out[-1]
            for adapter in _adapters(app_name, user_config.get(ADAPTERS_KEY), card.version):
                adapter_card = card.model_copy(
                    update={
                        "version": adapter.version,
                        "default": adapter.default,
                        "base_version": card.version,
                        "max_concurrent_requests": adapter.max_concurrent_requests
                        or card.max_concurrent_requests,
                    }
                )
                out.append(replace(base, card=adapter_card, adapter=adapter))
            break  # one model deployment per application
    return out


def _default_first(e: CatalogEntry) -> tuple[bool, bool]:
    """Sort key (stable, after the version sort): defaults first, an adapter marked
    default before its base (it was marked to take the name); among the rest, base
    models before adapters, so an unmarked adapter never takes the plain name."""
    is_adapter = e.adapter is not None
    return (not e.card.default, not is_adapter if e.card.default else is_adapter)


def _env_card(deployment_config: dict[str, Any]) -> Any:
    """The card's second copy, in the replicas' environment (contract.MODEL_CARD_ENV)."""
    actor = deployment_config.get("ray_actor_options") or {}
    env_vars = (actor.get("runtime_env") or {}).get("env_vars") or {}
    raw = env_vars.get(MODEL_CARD_ENV) if isinstance(env_vars, dict) else None
    if not isinstance(raw, str):
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return None


def _adapters(app_name: str, raw: Any, base_version: str) -> list[AdapterSpec]:
    """The readable adapters of an application's user_config; one that does not read,
    repeats a version, or takes the base's own is left out (and logged), so a typo in
    one adapter never hides the others or the base."""
    found: dict[str, AdapterSpec] = {}
    for item in raw if isinstance(raw, list) else []:
        try:
            adapter = AdapterSpec.model_validate(item)
        except ValueError:
            logger.warning("application %s lists an unreadable adapter", app_name)
            continue
        if adapter.version in found or adapter.version == base_version:
            logger.warning("application %s: adapter version %r is taken", app_name, adapter.version)
            continue
        found[adapter.version] = adapter
    return list(found.values())


def _progress_of(
    app_name: str, replicas: list[dict[str, Any]], progress: dict[str, bytes]
) -> StartupProgress | None:
    """The progress the first of the application's starting replicas published."""
    for replica in replicas:
        raw = progress.get(progress_key(app_name, str(replica.get("replica_id"))))
        if raw is None or plain(replica.get("state")) != "STARTING":
            continue
        try:
            return StartupProgress.model_validate_json(raw)
        except ValueError:
            logger.warning("application %s published unreadable progress", app_name)
    return None


def _version_key(version: str) -> tuple[tuple[int, int | str], ...]:
    # Natural order, so "10" sorts after "9" and "v2" after "v1".
    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in re.split(r"(\d+)", version) if p)


class Catalog:
    """Index of model applications, refreshed from the controller.

    Args:
        fetch: reads the controller's application details (a fake in unit tests).
        read_progress: reads startup progress records by KV key (`read_progress_kv`).
        refresh_interval_s: period of the background refresh loop.
        miss_refresh_s: a lookup that finds nothing refreshes first, unless the last
            refresh is younger than this (so unknown names cannot hammer the
            controller).
        on_refresh: called with the application names after each refresh (the
            handle cache drops the handles of applications that are gone).
    """

    def __init__(
        self,
        fetch: Callable[[], Awaitable[dict[str, Any]]] = fetch_serve_details,
        read_progress: Callable[[list[str]], Awaitable[dict[str, bytes]]] = read_progress_kv,
        refresh_interval_s: float = 2.0,
        miss_refresh_s: float = 0.5,
        on_refresh: Callable[[set[str]], None] | None = None,
    ) -> None:
        self._fetch = fetch
        self._read_progress = read_progress
        self._interval = refresh_interval_s
        self._miss_refresh_s = miss_refresh_s
        self._on_refresh = on_refresh
        self._by_deploy_id: dict[str, CatalogEntry] = {}
        self._by_name: dict[str, list[CatalogEntry]] = {}
        self._last_refresh = 0.0
        self._inflight: asyncio.Future[None] | None = None

    def load(self, entries: list[CatalogEntry]) -> None:
        by_name: dict[str, list[CatalogEntry]] = {}
        for e in entries:
            for name in (e.card.model, *e.card.aliases):
                by_name.setdefault(name, []).append(e)
        for versions in by_name.values():
            versions.sort(key=lambda e: _version_key(e.card.version), reverse=True)
            versions.sort(key=_default_first)
        self._by_deploy_id = {e.key: e for e in entries}
        self._by_name = by_name
        if self._on_refresh is not None:
            self._on_refresh({e.deploy_id for e in entries})

    async def refresh(self) -> None:
        """Re-reads the controller. Single-flight: callers that arrive while a read is
        in flight wait for that read instead of starting another."""
        if self._inflight is None:
            self._inflight = asyncio.ensure_future(self._read())
            # Cleared when the read ends, even if every waiter was cancelled before.
            self._inflight.add_done_callback(self._read_done)
        await asyncio.shield(self._inflight)

    def _read_done(self, future: asyncio.Future[None]) -> None:
        if self._inflight is future:
            self._inflight = None
        if not future.cancelled():
            future.exception()  # retrieved: a failed read nobody awaited is not an error

    async def _read(self) -> None:
        details = await self._fetch()
        self.load(entries_from_details(details, await self._progress(details)))
        self._last_refresh = time.monotonic()

    async def _progress(self, details: dict[str, Any]) -> dict[str, bytes]:
        keys = progress_keys(details)
        if not keys:
            return {}
        try:
            return await self._read_progress(keys)
        except Exception:  # progress is a courtesy: the catalog refreshes without it
            logger.debug("reading startup progress failed", exc_info=True)
            return {}

    async def find(self, pick: Callable[[], T | None]) -> T | None:
        """`pick()` on the current view; if it finds nothing, once more after a
        refresh (the model may have been deployed since), unless the view is fresh.

        This is the only "miss → refresh → retry" in the ingress."""
        found = pick()
        if found is None and time.monotonic() - self._last_refresh > self._miss_refresh_s:
            await self.refresh()
            found = pick()
        return found

    async def run_refresh_loop(self) -> None:
        while True:
            try:
                await self.refresh()
            except Exception:  # the controller may be restarting; keep the last view
                logger.warning("catalog refresh failed", exc_info=True)
            await asyncio.sleep(self._interval)

    def entries(self) -> list[CatalogEntry]:
        return sorted(self._by_deploy_id.values(), key=lambda e: e.key)

    def default_for(self, name: str) -> CatalogEntry | None:
        versions = self._by_name.get(name)
        return versions[0] if versions else None

    def resolve(self, model: str) -> CatalogEntry | None:
        if model.startswith(DEPLOY_ID_PREFIX):
            return self._by_deploy_id.get(model[len(DEPLOY_ID_PREFIX) :])
        entry = self.default_for(model)
        if entry is not None:
            return entry
        name, sep, version = model.rpartition(":")
        if sep:
            for e in self._by_name.get(name, []):
                if e.card.version == version:
                    return e
        return None

    def routable_ids(self, entry: CatalogEntry) -> list[str]:
        """Every model string that reaches `entry` (for /models)."""
        ids = []
        for name in (entry.card.model, *entry.card.aliases):
            if self.default_for(name) is entry:
                ids.append(name)
            ids.append(f"{name}:{entry.card.version}")
        ids.append(f"{DEPLOY_ID_PREFIX}{entry.key}")
        return ids
