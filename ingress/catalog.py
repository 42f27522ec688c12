"""Which models exist, read from the Serve controller: serve_config.yaml is the only list.

Why the controller: every model application publishes its ModelCard in its
deployment's `user_config` (deployments/contract.py). The controller stores that
the moment the application is deployed, before any replica exists, so a model that
is still starting (or scaled to zero) is already known and routable, and a later
`serve deploy` that adds or removes an application shows up at the next refresh
without touching the ingress. No second list to keep in sync.

Addressing (the model string a client sends):
    "NAME"             the version marked `default: true`, else the highest version
    "NAME:VERSION"     that version (the version separator is the last ':')
    "deploy_id:ID"     the application named ID, whatever it serves
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

from deployments.contract import MODEL_CARD_KEY, ModelCard

logger = logging.getLogger("ray.serve")

DEPLOY_ID_PREFIX = "deploy_id:"


@dataclass(frozen=True, slots=True)
class CatalogEntry:
    deploy_id: str  # the Serve application name
    card: ModelCard
    status: str  # the application's Serve status: RUNNING, DEPLOYING, ...
    message: str
    running_replicas: int
    target_replicas: int


async def fetch_serve_details() -> dict[str, Any]:
    """The controller's view of all applications (the dict behind `serve status`
    and the dashboard's /api/serve/applications/). Ray has no public async call for
    it, so this private hop is kept to this one function."""
    from ray.serve.context import _get_global_client

    client = _get_global_client()
    return await client._controller.get_serve_instance_details.remote()


def entries_from_details(details: dict[str, Any]) -> list[CatalogEntry]:
    """Pure: turns controller details into catalog entries (unit-tested)."""
    out = []
    for app_name, app in (details.get("applications") or {}).items():
        for dep in (app.get("deployments") or {}).values():
            user_config = (dep.get("deployment_config") or {}).get("user_config") or {}
            raw_card = user_config.get(MODEL_CARD_KEY) if isinstance(user_config, dict) else None
            if not raw_card:
                continue
            try:
                card = ModelCard.model_validate(raw_card)
            except ValueError:
                logger.warning("application %s has an unreadable model card", app_name)
                continue
            running = sum(1 for r in dep.get("replicas") or []
                          if _plain(r.get("state")) == "RUNNING")
            out.append(CatalogEntry(
                deploy_id=app_name, card=card, status=_plain(app.get("status", "")),
                message=str(app.get("message") or dep.get("message") or ""),
                running_replicas=running,
                target_replicas=int(dep.get("target_num_replicas") or 0),
            ))
            break  # one model deployment per application
    return out


def _plain(status: Any) -> str:
    # The details hold enum members in-process and strings over JSON.
    return str(getattr(status, "value", status))


def _version_key(version: str) -> tuple:
    # Natural order, so "10" sorts after "9" and "v2" after "v1".
    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in re.split(r"(\d+)", version) if p)


class Catalog:
    """Index of model applications, refreshed from the controller."""

    def __init__(
        self,
        fetch: Callable[[], Awaitable[dict[str, Any]]] = fetch_serve_details,
        refresh_interval_s: float = 2.0,
    ) -> None:
        self._fetch = fetch
        self._interval = refresh_interval_s
        self._by_deploy_id: dict[str, CatalogEntry] = {}
        self._by_name: dict[str, list[CatalogEntry]] = {}
        self._last_refresh = 0.0
        self._lock = asyncio.Lock()

    def load(self, entries: list[CatalogEntry]) -> None:
        by_name: dict[str, list[CatalogEntry]] = {}
        for e in entries:
            for name in (e.card.model, *e.card.aliases):
                by_name.setdefault(name, []).append(e)
        for versions in by_name.values():
            versions.sort(key=lambda e: _version_key(e.card.version), reverse=True)
            versions.sort(key=lambda e: not e.card.default)  # stable: default first
        self._by_deploy_id = {e.deploy_id: e for e in entries}
        self._by_name = by_name

    async def refresh(self) -> None:
        async with self._lock:
            details = await self._fetch()
            self.load(entries_from_details(details))
            self._last_refresh = time.monotonic()

    async def refresh_if_stale(self, max_age_s: float) -> None:
        if time.monotonic() - self._last_refresh > max_age_s:
            await self.refresh()

    async def run_refresh_loop(self) -> None:
        while True:
            try:
                await self.refresh()
            except Exception:  # the controller may be restarting; keep the last view
                logger.warning("catalog refresh failed", exc_info=True)
            await asyncio.sleep(self._interval)

    def entries(self) -> list[CatalogEntry]:
        return sorted(self._by_deploy_id.values(), key=lambda e: e.deploy_id)

    def default_for(self, name: str) -> CatalogEntry | None:
        versions = self._by_name.get(name)
        return versions[0] if versions else None

    def resolve(self, model: str) -> CatalogEntry | None:
        if model.startswith(DEPLOY_ID_PREFIX):
            return self._by_deploy_id.get(model[len(DEPLOY_ID_PREFIX):])
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
        ids.append(f"{DEPLOY_ID_PREFIX}{entry.deploy_id}")
        return ids
