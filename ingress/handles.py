"""Cached Serve handles, one per (application, streaming) pair.

`serve.get_app_handle` makes a blocking call to the controller, and every
`.options(...)` variant of a handle starts its own metrics pusher and long-poll
listener, so building handles per request would cost a controller round trip and
leak background work. Each pair is built once (concurrent misses share one build);
an entry is dropped when its application disappears from the catalog (`keep_only`,
called by the catalog after each refresh).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any


class HandleCache:
    def __init__(self, get_app_handle: Callable[[str], Any] | None = None) -> None:
        if get_app_handle is None:
            from ray import serve

            get_app_handle = serve.get_app_handle
        self._get_app_handle = get_app_handle
        self._handles: dict[tuple[str, bool], asyncio.Future[Any]] = {}

    async def get(self, app_name: str, *, stream: bool) -> Any:
        """The handle of `app_name`, configured for streaming or unary calls."""
        key = (app_name, stream)
        future = self._handles.get(key)
        if future is None:
            future = asyncio.ensure_future(self._build(app_name, stream))
            self._handles[key] = future
        try:
            return await asyncio.shield(future)
        except Exception:
            if self._handles.get(key) is future:  # let the next call try again
                del self._handles[key]
            raise

    async def _build(self, app_name: str, stream: bool) -> Any:
        base = await asyncio.to_thread(self._get_app_handle, app_name)
        return base.options(stream=stream)

    def keep_only(self, app_names: set[str]) -> None:
        """Drops the handles of applications not in `app_names`."""
        for key in [k for k in self._handles if k[0] not in app_names]:
            del self._handles[key]


async def wait_assigned(response: Any, timeout_s: float) -> None:
    """Waits until Serve has given the call to a replica, at most `timeout_s`.

    A call to an application whose replicas are starting (or scaled to zero) waits in
    Serve's queue; this bounds that wait without bounding the generation itself.

    Raises:
        TimeoutError: no replica took the call in time (the call is left queued: the
            caller decides whether to wait again or cancel it).
    """
    try:
        # Ray has no public awaitable for "assigned"; this private coroutine is the
        # one `_to_object_ref` awaits, kept to this one place.
        await asyncio.wait_for(asyncio.shield(response._fetch_future_result_async()), timeout_s)
    except TimeoutError:
        raise TimeoutError from None
