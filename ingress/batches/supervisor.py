"""The batch supervisor: a Serve deployment beside the ingress that owns every batch's
state machine and window.

    validating  ─ input.py checks the file ─▶ in_progress   (or failed, with line errors)
    in_progress ─ runner.py's pipeline, checkpointed ─▶ finalizing ─▶ completed
                  past its window ─▶ expired; asked to cancel ─▶ cancelling ─▶ cancelled
                  (both keep the output of the lines done)

A supervisor works on a batch only while it holds the batch's lease in the store
(renewed at every checkpoint), so several supervisors (replicas, or one restarted by
Serve) never run one batch twice, and a dead one's batches pass to the next after
`batches.lease_s`. Finished lines are checkpointed as parts under `batches/<id>/`; a
restarted run skips the lines they hold, and finalizing keeps each line once.

The lines run on the supervisor's callers (caller.py): Ray actors it starts on its
first batch, keeps while batches come, and stops after `CALLERS_IDLE_S` without one.
A run that stops early (cancelled, expired, its lease lost, failed) cancels its lines
on them; a cancel or the window's end does so at once (`_stop_when_ended`), not when
the next block of lines comes back.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from pyarrow.fs import FileSelector

from ingress.batches import runner
from ingress.batches.caller import LineCaller
from ingress.batches.input import InputCheck
from ingress.blobs import Blobs
from ingress.catalog import Catalog
from ingress.config import IngressConfig
from ingress.store import BatchRecord, FileRecord, Store

logger = logging.getLogger("ray.serve")

ACTIVE = ("validating", "in_progress", "finalizing", "cancelling")
MAX_ATTEMPTS = 3  # rounds a batch may fail in a row in one supervisor before it fails
# Lines in flight for a batch whose model the catalog does not know (every line then
# fails fast with the online endpoint's 404).
_UNKNOWN_MODEL_IN_FLIGHT = 4
_SERVE_DEFAULT_MAX_ONGOING = 5  # Serve's own default max_ongoing_requests
LINES_PER_CALLER = 128  # a caller holds this many lines in flight; more take more callers
MAX_CALLERS = 4
CALLERS_IDLE_S = 600.0  # callers are stopped after this long without a batch running


def requests_key(batch_id: str) -> str:
    return f"batches/{batch_id}/requests.jsonl"


def parts_prefix(batch_id: str) -> str:
    return f"batches/{batch_id}/parts"


def result_file_id(batch_id: str, kind: str) -> str:
    """The output (or error) file's id: fixed per batch, so a finalizing redone after a
    restart finds the file it already wrote instead of making a second one."""
    return f"file-{hashlib.sha256(f'{batch_id}/{kind}'.encode()).hexdigest()[:24]}"


def _now() -> int:
    return int(time.time())


def _internal_failure(rounds: int) -> dict[str, Any]:
    error = {
        "code": "internal_error",
        "message": f"The batch failed {rounds} times in a row on the server; its id is in "
        "the supervisor's log.",
        "param": None,
        "line": None,
    }
    return {"failed_at": _now(), "errors": {"object": "list", "data": [error]}}


class BatchSupervisor:
    """One per ingress application (Serve restarts it when it dies)."""

    async def __init__(self, config: dict[str, Any]) -> None:  # type: ignore[misc]  # Serve awaits it
        self.raw_config = config
        self.config = IngressConfig.model_validate(config)
        self.store = Store(self.config.state)
        self.blobs = Blobs.from_config(self.config.files, self.config.state)
        self.catalog = Catalog(
            refresh_interval_s=self.config.catalog_refresh_s,
            miss_refresh_s=self.config.catalog_miss_refresh_s,
        )
        self.worker = f"supervisor-{uuid.uuid4().hex[:12]}"
        self.running: dict[str, asyncio.Task[None]] = {}
        self.failures: dict[str, int] = {}  # batch id → rounds failed in a row
        self.callers: list[Any] = []  # LineCaller actors (handles), started on demand
        self._idle_since = time.monotonic()
        self._woken = asyncio.Event()
        self._watcher = asyncio.get_running_loop().create_task(self._watch())

    async def wake(self) -> None:
        """A batch was created (the ingress says so): look now, not at the next poll."""
        self._woken.set()

    def check_health(self) -> None:
        if self._watcher.done():
            raise RuntimeError("the batch supervisor's loop ended")

    async def _watch(self) -> None:
        """Claims active batches nobody holds, and runs each in a task of its own."""
        while True:
            try:
                for record in await self.store.active_batches():
                    task = self.running.get(record.id)
                    if task is not None and not task.done():
                        continue
                    if await self.store.claim_batch(
                        record.id, self.worker, self.config.batches.lease_s
                    ):
                        self.running[record.id] = asyncio.create_task(self._run(record))
                self.running = {k: t for k, t in self.running.items() if not t.done()}
                self._stop_idle_callers()
            except Exception:
                logger.exception(
                    "batch supervisor: a round failed; next in %s s",
                    self.config.batches.poll_interval_s,
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._woken.wait(), self.config.batches.poll_interval_s)
            self._woken.clear()

    def _callers(self, count: int) -> list[Any]:
        """`count` callers, started here if fewer run (each is ready in about 2 s: its
        blocks queue until then). Ray restarts a caller that dies, and retries the
        blocks it held; they die with this replica, their owner."""
        import ray

        while len(self.callers) < count:
            actor = ray.remote(LineCaller).options(num_cpus=0, max_restarts=-1, max_task_retries=3)
            self.callers.append(actor.remote(self.raw_config))
        return self.callers[:count]

    def _stop_idle_callers(self) -> None:
        if self.running:
            self._idle_since = time.monotonic()
        elif self.callers and time.monotonic() - self._idle_since > CALLERS_IDLE_S:
            import ray

            for caller in self.callers:
                ray.kill(caller)
            self.callers = []

    async def _run(self, record: BatchRecord) -> None:
        try:
            await self._advance(record)
            self.failures.pop(record.id, None)
        except Exception:
            count = self.failures[record.id] = self.failures.get(record.id, 0) + 1
            logger.exception("batch %s: round %d failed", record.id, count)
            if count >= MAX_ATTEMPTS:  # a fault of ours, not the file's: stop retrying
                await self.store.transition(record.id, ACTIVE, "failed", _internal_failure(count))
        finally:
            try:
                await self.store.release_batch(record.id, self.worker)
            except Exception:
                logger.warning("batch %s: lease not released (it expires)", record.id)

    async def _advance(self, record: BatchRecord) -> None:
        """Takes the batch from its status to the next until it ends or is handed on."""
        while True:
            current = await self.store.get_batch(record.owner, record.id)
            if current is None:
                return
            status = current.status
            if status == "validating":
                await self._validate(current)
            elif status == "in_progress":
                end = await self._execute(current)
                if end is None:  # the lease was lost: another supervisor has it now
                    return
                if end == "expired":
                    await self._finalize(current, "expired", ("in_progress",))
                elif end == "done":
                    await self.store.transition(
                        current.id, ("in_progress",), "finalizing", {"finalizing_at": _now()}
                    )
            elif status == "finalizing":
                await self._finalize(current, "completed", ("finalizing",))
            elif status == "cancelling":
                await self._finalize(current, "cancelled", ("cancelling",))
            else:
                return

    # --- validating -------------------------------------------------------------------

    async def _validate(self, record: BatchRecord) -> None:
        body = record.body
        now = _now()
        if now >= body["expires_at"]:
            await self._finalize(record, "expired", ("validating",))
            return
        source = await self.store.get_file(record.owner, body["input_file_id"])
        if source is None:
            await self._fail(
                record,
                [
                    {
                        "code": "file_not_found",
                        "message": "The input file was deleted.",
                        "param": "input_file_id",
                        "line": None,
                    }
                ],
            )
            return
        check = InputCheck(body["endpoint"], self.config.files.max_file_lines)
        await asyncio.to_thread(self._write_requests, record.id, source.blob_key, check)
        if check.errors:
            await self._fail(record, check.errors)
            return
        changes = {
            "in_progress_at": _now(),
            "model": check.model,
            "request_counts": {"total": check.lines, "completed": 0, "failed": 0},
        }
        await self.store.transition(record.id, ("validating",), "in_progress", changes)

    def _write_requests(self, batch_id: str, source_key: str, check: InputCheck) -> None:
        """Streams the input through the check into the rows the pipeline reads."""
        fs = self.blobs.filesystem
        target = self.blobs.path(requests_key(batch_id))
        fs.create_dir(target.rsplit("/", 1)[0], recursive=True)
        with self.blobs.open_input(source_key) as source, fs.open_output_stream(target) as out:
            for row in check.check(source):
                out.write(row.encode() + b"\n")

    async def _fail(self, record: BatchRecord, errors: list[dict[str, Any]]) -> None:
        changes = {"failed_at": _now(), "errors": {"object": "list", "data": errors}}
        await self.store.transition(record.id, ("validating",), "failed", changes)

    # --- in_progress ------------------------------------------------------------------

    async def _execute(self, record: BatchRecord) -> str | None:
        """Runs the lines no checkpoint holds. Returns "done", "expired", "cancel", or
        None when the lease was lost."""
        done, counts = await asyncio.to_thread(self._read_parts, record.id)
        total = record.body["request_counts"]["total"]
        if len(done) >= total:
            return "done"
        if _now() >= record.body["expires_at"]:
            return "expired"
        concurrency = await self._concurrency(record.body.get("model"))
        callers = self._callers(max(1, min(MAX_CALLERS, concurrency // LINES_PER_CALLER)))
        key = f"{record.id}/{uuid.uuid4().hex[:8]}"  # this run's lines on the callers
        ds = runner.pipeline(
            self.blobs.path(requests_key(record.id)),
            self.blobs.filesystem,
            set(done),
            callers,
            key,
            record.body["endpoint"],
            record.owner,
            concurrency,
        )
        loop = asyncio.get_running_loop()
        stopper = asyncio.create_task(self._stop_when_ended(record, key, callers))
        try:
            return await asyncio.to_thread(self._consume, ds, record, counts, len(done), loop)
        finally:  # a run that ended early leaves no line running (a done one has none)
            stopper.cancel()
            for caller in callers:
                caller.cancel.remote(key)

    async def _stop_when_ended(self, record: BatchRecord, key: str, callers: list[Any]) -> None:
        """Cancels the run's lines as soon as the batch is cancelled or past its window,
        not when its next block comes back (a block of long lines takes minutes). The
        callers then return the blocks without those lines, and the run's next checkpoint
        ends it (the checkpoint holds only lines that finished)."""
        while True:
            await asyncio.sleep(self.config.batches.checkpoint_s)
            try:
                current = await self.store.get_batch(record.owner, record.id)
            except Exception:
                logger.warning("batch %s: status not read; next in a checkpoint", record.id)
                continue
            ended = current is None or current.status != "in_progress"
            if ended or _now() >= record.body["expires_at"]:
                for caller in callers:
                    caller.cancel.remote(key)
                return

    async def _concurrency(self, model: str | None) -> int:
        """The batch's share of its model's capacity (`online_share` of what its
        running replicas take in flight, within the ingress's per-model limit):
        online requests keep the rest."""
        entry = None
        if model:
            entry = await self.catalog.find(lambda: self.catalog.resolve(model))
        if entry is None:
            return _UNKNOWN_MODEL_IN_FLIGHT
        per_replica = entry.max_ongoing_requests or _SERVE_DEFAULT_MAX_ONGOING
        capacity = min(
            per_replica * max(1, entry.running_replicas), entry.card.max_concurrent_requests
        )
        return max(1, int(self.config.batches.online_share * capacity))

    def _consume(
        self,
        ds: Any,
        record: BatchRecord,
        counts: dict[str, int],
        part: int,
        loop: asyncio.AbstractEventLoop,
    ) -> str | None:
        """Iterates the pipeline (in a worker thread), writing a part every
        `checkpoint_s`; each checkpoint says whether to go on."""
        buffer: list[tuple[int, bool, str]] = []
        last = time.monotonic()
        seq = part

        def checkpoint() -> str | None:
            nonlocal seq, last
            seq += 1
            verdict = asyncio.run_coroutine_threadsafe(
                self._checkpoint(record, buffer, counts, seq), loop
            ).result()
            buffer.clear()
            last = time.monotonic()
            return verdict

        for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
            for i, ok, line in zip(batch["i"], batch["ok"], batch["line"], strict=True):
                buffer.append((int(i), bool(ok), str(line)))
            if time.monotonic() - last >= self.config.batches.checkpoint_s:
                verdict = checkpoint()
                if verdict is not None:
                    return None if verdict == "lost" else verdict
        verdict = checkpoint()
        return "done" if verdict is None else (None if verdict == "lost" else verdict)

    async def _checkpoint(
        self,
        record: BatchRecord,
        rows: list[tuple[int, bool, str]],
        counts: dict[str, int],
        seq: int,
    ) -> str | None:
        """Writes a part, updates request_counts, renews the lease; says "cancel",
        "expired" or "lost" when the run must stop, else None."""
        if rows:
            data = "".join(
                json.dumps({"i": i, "ok": ok, "line": line}) + "\n" for i, ok, line in rows
            )
            await self.blobs.write_bytes(
                f"{parts_prefix(record.id)}/{seq:08d}.jsonl", data.encode()
            )
            counts["completed"] += sum(1 for _, ok, _ in rows if ok)
            counts["failed"] += sum(1 for _, ok, _ in rows if not ok)
        if not await self.store.claim_batch(record.id, self.worker, self.config.batches.lease_s):
            return "lost"
        total = record.body["request_counts"]["total"]
        changed = await self.store.transition(
            record.id, ("in_progress",), None, {"request_counts": {"total": total, **counts}}
        )
        if changed is None:  # no longer in progress: cancelling
            return "cancel"
        if _now() >= record.body["expires_at"]:
            return "expired"
        return None

    def _read_parts(self, batch_id: str) -> tuple[dict[int, tuple[bool, str]], dict[str, int]]:
        """The lines the checkpoint holds (each line once: the first part that has it)."""
        done: dict[int, tuple[bool, str]] = {}
        fs = self.blobs.filesystem
        selector = FileSelector(self.blobs.path(parts_prefix(batch_id)), allow_not_found=True)
        for info in sorted(fs.get_file_info(selector), key=lambda f: f.path):
            with fs.open_input_stream(info.path) as stream:
                for raw in stream.read().splitlines():
                    row = json.loads(raw)
                    done.setdefault(row["i"], (row["ok"], row["line"]))
        counts = {
            "completed": sum(1 for ok, _ in done.values() if ok),
            "failed": sum(1 for ok, _ in done.values() if not ok),
        }
        return done, counts

    # --- the end ----------------------------------------------------------------------

    async def _finalize(self, record: BatchRecord, status: str, allowed: tuple[str, ...]) -> None:
        """Writes the output and error files from the checkpoint, then the end status."""
        done, counts = await asyncio.to_thread(self._read_parts, record.id)
        changes: dict[str, Any] = {f"{status}_at": _now()}
        total = record.body.get("request_counts", {}).get("total", 0)
        changes["request_counts"] = {"total": total, **counts}
        for kind, ok in (("output", True), ("error", False)):
            lines = [line for _, (good, line) in sorted(done.items()) if good is ok]
            if lines:
                changes[f"{kind}_file_id"] = await self._result_file(record, kind, lines)
        if await self.store.transition(record.id, allowed, status, changes) is not None:
            await self.blobs.delete_prefix(f"batches/{record.id}")

    async def _result_file(self, record: BatchRecord, kind: str, lines: list[str]) -> str:
        file_id = result_file_id(record.id, kind)
        if await self.store.get_file(record.owner, file_id) is not None:
            return file_id
        key = f"files/{file_id}"

        async def chunks() -> AsyncIterator[bytes]:
            for start in range(0, len(lines), 512):
                yield "".join(f"{line}\n" for line in lines[start : start + 512]).encode()

        size = await self.blobs.write(key, chunks())
        await self.store.put_file(
            FileRecord(
                id=file_id,
                owner=record.owner,
                purpose="batch_output",
                filename=f"{record.id}_{kind}.jsonl",
                bytes=size,
                created_at=_now(),
                blob_key=key,
                lines=len(lines),
            )
        )
        return file_id
