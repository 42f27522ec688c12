"""A starting model replica says what it is doing: in the replica log, and in Ray's
internal KV, where the ingress reads it for /v1/openai/models (the key and the record
are in deployments/contract.py, the reading in ingress/catalog.py).

Preparing a model can take minutes (Gemma's conversion, an engine's start on CPU);
without this a client sees only DEPLOYING for all of it. Ray is imported only by a
reporter made inside a Serve replica; anywhere else (unit tests, the preparation CLIs)
a reporter only logs.

A preparation that runs in a child process (sources.py `_prepare_in_subprocess`)
reports through its stdout, one `progress_line` per step, which the parent parses
(`parse_progress_line`) and passes on to its reporter.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable

from deployments.contract import PROGRESS_NAMESPACE, StartupProgress, progress_key

logger = logging.getLogger("ray.serve")

# What a step reporter is called with: (what is being done, step, total).
OnProgress = Callable[[str, int, int], None]
# Writes `value` under `key` (None deletes it).
Publish = Callable[[str, bytes | None], None]

_LINE = re.compile(r"^progress: (\d+)/(\d+) (.+)$")


class ProgressReporter:
    """Logs each step of a replica's start and publishes it, until `finish`/`clear`.

    Args:
        name: what the log lines name (the model and version).
        key: the replica's KV key (contract.progress_key); None: log only.
        publish: writes the KV; None: log only.
    """

    def __init__(self, name: str, key: str | None = None, publish: Publish | None = None) -> None:
        self._name = name
        self._key = key
        self._publish = publish
        self._started = time.monotonic()
        self._step_started: float | None = None

    def step(self, doing: str, step: int, total: int) -> None:
        """Records that the replica now does `doing`, step `step` of `total`."""
        progress = StartupProgress(doing=doing, step=step, total=total)
        now = time.monotonic()
        took = (
            ""
            if self._step_started is None
            else f"; the step before took {now - self._step_started:.1f} s"
        )
        logger.info("%s: %s%s", self._name, progress.describe(), took)
        self._step_started = now
        self._write(progress.model_dump_json().encode())

    def finish(self) -> None:
        """The replica started: logs the total and removes the record."""
        logger.info("%s: started in %.1f s", self._name, time.monotonic() - self._started)
        self.clear()

    def clear(self) -> None:
        """Removes the record (a failed start leaves nothing to show)."""
        self._write(None)

    def _write(self, value: bytes | None) -> None:
        if self._publish is None or self._key is None:
            return
        try:
            self._publish(self._key, value)
        except Exception:  # progress is a courtesy: never fail a start over it
            logger.warning("%s: could not publish startup progress", self._name, exc_info=True)


def replica_reporter(name: str) -> ProgressReporter:
    """The reporter of the Serve replica this runs in; a log-only one elsewhere.

    Args:
        name: what the log lines name (the model and version).
    """
    try:
        from ray.serve.context import _get_internal_replica_context
    except ImportError:
        return ProgressReporter(name)
    context = _get_internal_replica_context()  # type: ignore[no-untyped-call]  # Ray's, unannotated
    if context is None:  # not inside a replica (unit tests)
        return ProgressReporter(name)
    key = progress_key(context.app_name, context.replica_id.unique_id)
    return ProgressReporter(name, key, _kv_publish)


def _kv_publish(key: str, value: bytes | None) -> None:
    # Ray's internal KV is private API; this is its one use on the deployments side.
    from ray.experimental import internal_kv

    if value is None:
        internal_kv._internal_kv_del(key, namespace=PROGRESS_NAMESPACE)
    else:
        internal_kv._internal_kv_put(key, value, overwrite=True, namespace=PROGRESS_NAMESPACE)


def progress_line(doing: str, step: int, total: int) -> str:
    """One step, as a preparation CLI prints it on stdout for its parent."""
    return f"progress: {step}/{total} {doing}"


def parse_progress_line(line: str) -> tuple[str, int, int] | None:
    """The (doing, step, total) of a `progress_line`; None for any other line."""
    match = _LINE.match(line.strip())
    if match is None:
        return None
    return match.group(3), int(match.group(1)), int(match.group(2))
