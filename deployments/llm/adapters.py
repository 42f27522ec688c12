"""The LoRA adapters of one LLM replica: versions that run on this replica's base model.

Who does what:
    the ingress   sends the adapter (AdapterSpec, from the catalog) with the request, and
                  its id as Serve's multiplexed model id (ingress/forward.py);
    Serve         routes an adapter's requests to replicas that already hold it, and keeps
                  an LRU of `capacity` adapters per replica (`serve.multiplexed`);
    this module   loads an adapter on first use (source → directory → engine), counts
                  loads, and unloads one that a reconfigure removed once its last
                  request ends, so in-flight requests finish;
    the engine    holds the weights (vLLM's own LRU of `max_cpu_loras`, and it reloads
                  an evicted adapter from its directory by itself when asked for it).

The request carries the adapter's source, so a replica serves an adapter the moment the
catalog lists it, even before Serve has handed this replica the new user_config.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

from deployments.contract import ADAPTERS_KEY, AdapterSpec
from deployments.engines import AdapterRef, LLMEngine
from deployments.errors import InvalidAdapter
from deployments.models.sources import resolve_model_source

logger = logging.getLogger("ray.serve")

Loader = Callable[[str], Awaitable[AdapterRef]]

# How long a replica answers "cannot be loaded" for an adapter that failed, before it
# tries its files again (an operator may fix them in place).
FAILED_RETRY_S = 10.0


def adapters_of(user_config: dict[str, Any] | None) -> list[AdapterSpec]:
    """The readable adapters of a user_config (the catalog leaves out the same ones)."""
    found = []
    for item in (user_config or {}).get(ADAPTERS_KEY) or []:
        try:
            found.append(AdapterSpec.model_validate(item))
        except ValueError:
            continue
    return found


class AdapterSet:
    """Args:
    engine: the replica's started engine.
    enabled: whether the engine was started with LoRA support (`enable_lora`).
    capacity: adapters one replica keeps loaded (vLLM's max_cpu_loras, else
        max_loras), which is also the LRU size Serve's multiplexing keeps per replica.
    """

    def __init__(self, engine: LLMEngine, *, enabled: bool, capacity: int) -> None:
        self._engine = engine
        self._enabled = enabled
        self._specs: dict[str, AdapterSpec] = {}  # by model id: what the last request sent
        self._refs: dict[str, AdapterRef] = {}  # by model id: loaded at least once
        self._running: Counter[str] = Counter()  # requests in flight, by model id
        self._removed: set[str] = set()  # gone from the config, unloaded when idle
        self.loads: Counter[str] = Counter()  # by version, for stats and tests
        # Adapters that failed to load, by model id: (why, until when). Requests for a
        # broken adapter then fail at once instead of each costing the engine a load.
        self._failed: dict[str, tuple[str, float]] = {}
        self._load: Loader = _multiplexed(self._load_by_id, max(1, capacity))

    async def acquire(self, spec: AdapterSpec) -> AdapterRef:
        """The adapter, loaded; pair with `release`.

        Raises:
            InvalidAdapter: LoRA is off on this engine, or the adapter does not load.
        """
        if not self._enabled:
            raise InvalidAdapter("LoRA is not enabled on this version's engine")
        failed = self._failed.get(spec.model_id)
        if failed is not None and time.monotonic() < failed[1]:
            raise InvalidAdapter(failed[0])
        self._specs[spec.model_id] = spec
        try:
            ref = await self._load(spec.model_id)
            # Again on every request: a no-op while vLLM holds it, and a checked reload
            # when vLLM's LRU dropped it (or a reconfigure unloaded it). Left to the
            # engine step instead, a reload whose files went bad kills the engine.
            await self._engine.load_adapter(ref)
            self._refs[spec.model_id] = ref
        except InvalidAdapter as exc:
            self._failed[spec.model_id] = (str(exc), time.monotonic() + FAILED_RETRY_S)
            raise
        self._failed.pop(spec.model_id, None)
        self._running[spec.model_id] += 1
        return ref

    async def release(self, spec: AdapterSpec) -> None:
        model_id = spec.model_id
        self._running[model_id] -= 1
        if self._running[model_id] <= 0:
            del self._running[model_id]
            if model_id in self._removed:
                await self._unload(model_id)

    async def reconfigure(self, adapters: list[AdapterSpec]) -> None:
        """Applies a new adapter list: the ones no longer listed are unloaded now if
        idle, else when their last request ends."""
        listed = {a.model_id for a in adapters}
        self._removed = set(self._refs) - listed
        for model_id in [m for m in self._removed if not self._running[m]]:
            await self._unload(model_id)

    async def _unload(self, model_id: str) -> None:
        ref = self._refs.pop(model_id, None)
        self._removed.discard(model_id)
        if ref is not None:
            await self._engine.unload_adapter(ref)
            logger.info("adapter %s unloaded (removed from the config)", ref.name)

    async def _load_by_id(self, model_id: str) -> AdapterRef:
        spec = self._specs[model_id]
        started = time.monotonic()
        try:
            path = await asyncio.to_thread(resolve_model_source, spec.source)
        except Exception as exc:
            logger.warning("adapter %s: source does not resolve: %s", spec.version, exc)
            raise InvalidAdapter("its files were not found") from None
        previous = self._refs.get(model_id)
        ref = AdapterRef(
            name=spec.version,
            # vLLM tells adapters apart by this id: a changed source is a new model id,
            # hence a new int id and a fresh load of the new files.
            int_id=previous.int_id if previous else _next_int_id(),
            path=str(path),
        )
        await self._engine.load_adapter(ref)
        self._refs[model_id] = ref
        self.loads[spec.version] += 1
        logger.info("adapter %s loaded in %.2f s", spec.version, time.monotonic() - started)
        return ref


_int_ids = iter(range(1, 2**31))


def _next_int_id() -> int:
    return next(_int_ids)


def _multiplexed(load: Loader, capacity: int) -> Loader:
    """Serve's multiplexed loader inside a replica (it reports the loaded ids to the
    routers); outside one (unit tests), a plain LRU of the same size."""
    from ray.serve.context import _get_internal_replica_context

    if _get_internal_replica_context() is not None:  # type: ignore[no-untyped-call]  # Ray's
        from ray import serve

        # A plain function, not a bound method: Serve keeps its cache on the callable.
        async def load_adapter(model_id: str) -> AdapterRef:
            return await load(model_id)

        wrapped: Loader = serve.multiplexed(max_num_models_per_replica=capacity)(load_adapter)
        return wrapped
    cache: OrderedDict[str, AdapterRef] = OrderedDict()

    async def local(model_id: str) -> AdapterRef:
        if model_id in cache:
            cache.move_to_end(model_id)
            return cache[model_id]
        if len(cache) >= capacity:
            cache.popitem(last=False)
        cache[model_id] = await load(model_id)
        return cache[model_id]

    return local
