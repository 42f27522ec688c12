"""The state store: what the ingress keeps between requests.

What: the stored responses of the Responses API (table `responses`: each response as
returned, its request's input items, and the context the model saw, for
`previous_response_id`), per owner (the API key's id, ingress/auth.py `key_id`; "" when
auth is off); every read and write of a row names its owner. Retention: older than
`state.response_max_age_s`, or beyond `state.max_responses_per_key` per owner (the
oldest first), rows are deleted (`put_response` for its owner, `prune` for all, every
minute from the ingress's lifespan). The Files API's files (table `files`: each file's
metadata; its bytes are in the blob store, ingress/blobs.py, under `blob_key`) and the
Batch API's batches (table `batches`: the Batch object as JSON, its status also as a
column, and a lease: which worker drives it until when), per owner as well.

Batches change state by `transition`, a read-check-write in one transaction that takes
the row's write lock first (SQLite: `BEGIN IMMEDIATE`, one writer at a time; PostgreSQL:
`SELECT ... FOR UPDATE`), so that of concurrent transitions from one state exactly one
wins. A worker drives a batch while it holds its lease (`claim_batch`: one conditional
UPDATE takes a free or expired lease or renews its own).

Where: by default an SQLite file, `~/.openai-serve/state.db` (`state.data_dir`, created
mode 0700), which every ingress replica of one machine shares (WAL journal, a busy
timeout). Several machines (a KubeRay cluster) need PostgreSQL: set `state.url`, or
the variable OPENAI_SERVE_STATE_URL (`state.url_env`), to
`postgresql+asyncpg://USER:PASSWORD@HOST:5432/DB`; the tables are made on first use.

Failures: a database that is down or slow (every query is bounded by QUERY_TIMEOUT_S)
raises StoreUnavailable, which the endpoints answer with a 503. Neither its message nor
the logs carry the URL's password (`url_for_log` masks it).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import AsyncIterator, Collection
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    ColumnElement,
    Double,
    MetaData,
    String,
    Table,
    Text,
    and_,
    delete,
    event,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.engine import Connection, Row, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, IntegrityError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from ingress.config import StateConfig, state_url_problem

logger = logging.getLogger("ray.serve")

QUERY_TIMEOUT_S = 10.0  # every query, waiting for a connection included
POOL_SIZE, POOL_OVERFLOW = 2, 3  # connections per ingress replica: at most 5

METADATA = MetaData()
RESPONSES = Table(
    "responses",
    METADATA,
    Column("id", String(200), primary_key=True),
    Column("owner", String(200), nullable=False, index=True),
    Column("created_at", BigInteger, nullable=False, index=True),
    Column("body", Text, nullable=False),  # JSON
    Column("input_items", Text, nullable=False),  # JSON
    Column("context", Text, nullable=False),  # JSON
)
FILES = Table(
    "files",
    METADATA,
    Column("id", String(200), primary_key=True),
    Column("owner", String(200), nullable=False, index=True),
    Column("purpose", String(50), nullable=False),
    Column("filename", String(1000), nullable=False),
    Column("bytes", BigInteger, nullable=False),
    Column("created_at", BigInteger, nullable=False, index=True),
    Column("blob_key", String(500), nullable=False),
    Column("lines", BigInteger, nullable=False),
)
BATCHES = Table(
    "batches",
    METADATA,
    Column("id", String(200), primary_key=True),
    Column("owner", String(200), nullable=False, index=True),
    Column("status", String(50), nullable=False, index=True),
    Column("created_at", BigInteger, nullable=False, index=True),
    Column("body", Text, nullable=False),  # JSON: the Batch object
    Column("lease_owner", String(200), nullable=True),
    Column("lease_until", Double, nullable=True),  # unix seconds
)
ACTIVE_BATCH_STATUSES = ("validating", "in_progress", "finalizing", "cancelling")


class StoreUnavailable(Exception):
    """The database is down, unreachable or too slow (a 503 for the client)."""


@dataclass(slots=True)
class StoredResponse:
    id: str  # "resp_<hex>"
    owner: str  # the API key's id (ingress/auth.py key_id); "" when auth is off
    created_at: int  # unix seconds
    body: dict[str, Any]  # the Response object as returned to the client
    input_items: list[dict[str, Any]]  # this request's own input items
    context: list[dict[str, Any]]  # what the model saw before its output, as input items


@dataclass(slots=True)
class FileRecord:
    id: str  # "file-<hex>"
    owner: str  # as StoredResponse.owner
    purpose: str  # "batch" (uploads), "batch_output" (written by batches)
    filename: str
    bytes: int
    created_at: int  # unix seconds
    blob_key: str  # its bytes' key in the blob store (ingress/blobs.py)
    lines: int  # lines in the file (counted while an upload streams)

    def to_openai(self) -> dict[str, Any]:
        """OpenAI's File object (OpenAIFile). `expires_at` and `status_details` are left
        out: the schema types them integer and string, not null, and they are unset."""
        return {
            "id": self.id,
            "object": "file",
            "bytes": self.bytes,
            "created_at": self.created_at,
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed",
        }


@dataclass(slots=True)
class BatchRecord:
    id: str  # "batch_<hex>"
    owner: str
    # validating | failed | in_progress | finalizing | completed | expired | cancelling | cancelled
    status: str
    created_at: int  # unix seconds
    body: dict[str, Any]  # the OpenAI Batch object; body["status"] == status
    lease_owner: str | None = None  # the worker driving it
    lease_until: float | None = None  # unix seconds; after it, another worker may claim it


def _url(config: StateConfig) -> str:
    """The configured URL: `url`, else the variable `url_env`, else the SQLite file."""
    url = config.url or (os.environ.get(config.url_env) if config.url_env else None)
    if url is None:
        path = Path(config.data_dir).expanduser() / "state.db"
        return f"sqlite+aiosqlite:///{path}"
    problem = state_url_problem(url)
    if problem is None:
        try:
            make_url(url)
        except ArgumentError:
            problem = "the state store's URL cannot be parsed"
    if problem is not None:
        source = "state.url" if config.url else config.url_env
        raise ValueError(f"{source}: {problem}")  # names the setting, never its value
    return url


def _unavailable(exc: BaseException) -> StoreUnavailable:
    """The exception the endpoint answers with a 503: no URL, host, path or class name."""
    why = "timed out" if isinstance(exc, TimeoutError | PoolTimeout) else "failed"
    return StoreUnavailable(f"the state store is unavailable ({why}); retry later")


class Store:
    """One engine (a small pool) per ingress replica; every method starts it on first use."""

    def __init__(self, config: StateConfig) -> None:
        self.config = config
        self._url = _url(config)
        self._engine: AsyncEngine | None = None
        self._started = False
        self._start_lock = asyncio.Lock()

    @property
    def url_for_log(self) -> str:
        return make_url(self._url).render_as_string(hide_password=True)

    @property
    def _sqlite(self) -> bool:
        return self._url.startswith("sqlite")

    async def start(self) -> None:
        """Connects and makes the tables (idempotent)."""
        if self._started:
            return
        async with self._start_lock:
            if self._started:
                return
            async with self._connect() as conn:
                # Several replicas may start at once: one makes a table after another
                # found it missing, whose CREATE then fails; its next try finds it.
                for attempt in range(3):
                    try:
                        async with conn.begin():
                            await conn.run_sync(METADATA.create_all)
                        break
                    except DBAPIError:
                        if attempt == 2:
                            raise
                        await asyncio.sleep(0.1 * (attempt + 1))
            self._started = True
            logger.info("state store: %s", self.url_for_log)

    def _make_engine(self) -> AsyncEngine:
        connect_args: dict[str, Any] = {}
        if self._sqlite:
            folder = Path(make_url(self._url).database or "").parent
            try:
                folder.mkdir(mode=0o700, parents=True)
                folder.chmod(0o700)  # mkdir's mode is cut by the umask
            except FileExistsError:
                pass
        else:  # asyncpg: its connect and each statement bounded on the server side too
            connect_args = {"timeout": QUERY_TIMEOUT_S, "command_timeout": QUERY_TIMEOUT_S}
        engine = create_async_engine(
            self._url,
            pool_size=POOL_SIZE,
            max_overflow=POOL_OVERFLOW,
            pool_timeout=QUERY_TIMEOUT_S,
            pool_pre_ping=not self._sqlite,  # a PostgreSQL restart costs no failed request
            pool_recycle=1800,
            hide_parameters=True,  # errors never quote request bodies
            connect_args=connect_args,
        )
        if self._sqlite:
            event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
            event.listen(engine.sync_engine, "begin", _sqlite_begin)
        return engine

    async def close(self) -> None:
        if self._engine is not None:
            await self._engine.dispose()
        self._engine, self._started = None, False

    @asynccontextmanager
    async def _connect(
        self, begin: bool = False, write_lock: bool = False
    ) -> AsyncIterator[AsyncConnection]:
        """A pooled connection (in a transaction when `begin`), bounded by QUERY_TIMEOUT_S;
        a database failure becomes StoreUnavailable (logged here, with the masked URL).
        `write_lock`: on SQLite, the transaction takes the write lock at its start (BEGIN
        IMMEDIATE), so that what it reads stays true until it commits."""
        try:
            if self._engine is None:
                self._engine = self._make_engine()  # SQLite: makes its folder (an OSError)
            async with asyncio.timeout(QUERY_TIMEOUT_S):
                async with self._engine.connect() as conn:
                    if write_lock and self._sqlite:
                        await conn.execution_options(sqlite_begin="IMMEDIATE")
                    if not begin:
                        yield conn
                    else:
                        async with conn.begin():
                            yield conn
        except IntegrityError:
            raise  # a duplicate id: a bug, not an outage
        except (DBAPIError, PoolTimeout, TimeoutError, OSError) as exc:
            logger.warning("state store %s: %s", self.url_for_log, self._why(exc))
            raise _unavailable(exc) from None

    def _why(self, exc: BaseException) -> str:
        """For the log: the driver's own words (first line), the password masked."""
        if isinstance(exc, TimeoutError):
            return f"no answer within {QUERY_TIMEOUT_S} s"
        cause = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
        text = f"{type(cause).__name__}: {str(cause).splitlines()[0] if str(cause) else ''}"
        password = make_url(self._url).password
        return text.replace(str(password), "***") if password else text

    async def put_response(self, stored: StoredResponse) -> None:
        """Stores one response, then deletes its owner's oldest beyond the count bound."""
        await self.start()
        async with self._connect(begin=True) as conn:
            await conn.execute(
                insert(RESPONSES).values(
                    id=stored.id,
                    owner=stored.owner,
                    created_at=stored.created_at,
                    body=_dumps(stored.body),
                    input_items=_dumps(stored.input_items),
                    context=_dumps(stored.context),
                )
            )
            kept = (
                select(RESPONSES.c.id)
                .where(RESPONSES.c.owner == stored.owner)
                .order_by(RESPONSES.c.created_at.desc(), RESPONSES.c.id.desc())
                .offset(self.config.max_responses_per_key)
            )
            await conn.execute(
                delete(RESPONSES).where(RESPONSES.c.owner == stored.owner, RESPONSES.c.id.in_(kept))
            )

    async def get_response(self, owner: str, response_id: str) -> StoredResponse | None:
        """The response, or None when absent, expired or another owner's."""
        await self.start()
        async with self._connect() as conn:
            row = (
                await conn.execute(
                    select(RESPONSES).where(
                        RESPONSES.c.owner == owner,
                        RESPONSES.c.id == response_id,
                        RESPONSES.c.created_at >= self._cutoff(time.time()),
                    )
                )
            ).first()
        if row is None:
            return None
        return StoredResponse(
            id=row.id,
            owner=row.owner,
            created_at=row.created_at,
            body=json.loads(row.body),
            input_items=json.loads(row.input_items),
            context=json.loads(row.context),
        )

    async def delete_response(self, owner: str, response_id: str) -> bool:
        """True when the owner had that response (it is gone now)."""
        await self.start()
        async with self._connect(begin=True) as conn:
            done = await conn.execute(
                delete(RESPONSES).where(RESPONSES.c.owner == owner, RESPONSES.c.id == response_id)
            )
        return done.rowcount > 0

    async def prune(self, now: float | None = None) -> int:
        """Deletes every owner's expired responses, and each owner's beyond the count
        bound (after a lowered bound); returns how many went."""
        await self.start()
        cutoff = self._cutoff(time.time() if now is None else now)
        rank = (
            func.row_number()
            .over(
                partition_by=RESPONSES.c.owner,
                order_by=(RESPONSES.c.created_at.desc(), RESPONSES.c.id.desc()),
            )
            .label("rank")
        )
        ranked = select(RESPONSES.c.id, rank).subquery()
        excess = select(ranked.c.id).where(ranked.c.rank > self.config.max_responses_per_key)
        async with self._connect(begin=True) as conn:
            aged = await conn.execute(delete(RESPONSES).where(RESPONSES.c.created_at < cutoff))
            counted = await conn.execute(delete(RESPONSES).where(RESPONSES.c.id.in_(excess)))
        return aged.rowcount + counted.rowcount

    async def run_prune_loop(self, interval_s: float = 60.0) -> None:
        """prune() every `interval_s` until cancelled; a failed round is logged and the
        next one tries again."""
        while True:
            try:
                deleted = await self.prune()
                if deleted:
                    logger.info("state store: %d stored responses deleted (retention)", deleted)
            except StoreUnavailable:
                pass  # logged by _connect
            except Exception:
                logger.exception("state store: prune failed")
            await asyncio.sleep(interval_s)

    # --- files ---------------------------------------------------------------------

    async def put_file(self, f: FileRecord) -> None:
        await self.start()
        async with self._connect(begin=True) as conn:
            await conn.execute(
                insert(FILES).values(
                    id=f.id,
                    owner=f.owner,
                    purpose=f.purpose,
                    filename=f.filename,
                    bytes=f.bytes,
                    created_at=f.created_at,
                    blob_key=f.blob_key,
                    lines=f.lines,
                )
            )

    async def get_file(self, owner: str, file_id: str) -> FileRecord | None:
        """The file, or None when absent or another owner's."""
        await self.start()
        async with self._connect() as conn:
            row = (
                await conn.execute(
                    select(FILES).where(FILES.c.owner == owner, FILES.c.id == file_id)
                )
            ).first()
        return None if row is None else _file(row)

    async def count_files(self, owner: str) -> int:
        """How many files the owner holds (the bound files.max_files_per_key)."""
        await self.start()
        async with self._connect() as conn:
            count = await conn.scalar(
                select(func.count()).select_from(FILES).where(FILES.c.owner == owner)
            )
        return int(count or 0)

    async def list_files(
        self,
        owner: str,
        purpose: str | None,
        limit: int,
        after: str | None,
        order: str = "desc",
    ) -> tuple[list[FileRecord], bool]:
        """A page of the owner's files by creation time (`order` "desc" or "asc"), those
        after the file id `after` (an unknown one: an empty page); and whether more
        follow."""
        await self.start()
        descending = order != "asc"
        query = select(FILES).where(FILES.c.owner == owner)
        if purpose is not None:
            query = query.where(FILES.c.purpose == purpose)
        if after is not None:
            query = query.where(_after(FILES, owner, after, descending))
        keys = (FILES.c.created_at, FILES.c.id)
        query = query.order_by(*(k.desc() if descending else k.asc() for k in keys))
        async with self._connect() as conn:
            rows = (await conn.execute(query.limit(limit + 1))).all()
        return [_file(r) for r in rows[:limit]], len(rows) > limit

    async def delete_file(self, owner: str, file_id: str) -> FileRecord | None:
        """Deletes the owner's file row; returns it (its blob is the caller's to delete),
        or None when the owner had no such file."""
        await self.start()
        where = (FILES.c.owner == owner, FILES.c.id == file_id)
        async with self._connect(begin=True) as conn:
            row = (await conn.execute(select(FILES).where(*where))).first()
            if row is None:
                return None
            await conn.execute(delete(FILES).where(*where))
        return _file(row)

    # --- batches -------------------------------------------------------------------

    async def put_batch(self, b: BatchRecord) -> None:
        await self.start()
        async with self._connect(begin=True) as conn:
            await conn.execute(
                insert(BATCHES).values(
                    id=b.id,
                    owner=b.owner,
                    status=b.status,
                    created_at=b.created_at,
                    body=_dumps(b.body),
                    lease_owner=b.lease_owner,
                    lease_until=b.lease_until,
                )
            )

    async def get_batch(self, owner: str, batch_id: str) -> BatchRecord | None:
        """The batch, or None when absent or another owner's."""
        await self.start()
        async with self._connect() as conn:
            row = (
                await conn.execute(
                    select(BATCHES).where(BATCHES.c.owner == owner, BATCHES.c.id == batch_id)
                )
            ).first()
        return None if row is None else _batch(row)

    async def list_batches(
        self, owner: str, limit: int, after: str | None
    ) -> tuple[list[BatchRecord], bool]:
        """A page of the owner's batches, newest first, those after the batch id `after`
        (an unknown one: an empty page); and whether more follow."""
        await self.start()
        query = select(BATCHES).where(BATCHES.c.owner == owner)
        if after is not None:
            query = query.where(_after(BATCHES, owner, after, descending=True))
        query = query.order_by(BATCHES.c.created_at.desc(), BATCHES.c.id.desc())
        async with self._connect() as conn:
            rows = (await conn.execute(query.limit(limit + 1))).all()
        return [_batch(r) for r in rows[:limit]], len(rows) > limit

    async def transition(
        self,
        batch_id: str,
        allowed_from: Collection[str],
        status: str | None,
        changes: dict[str, Any],
        owner: str | None = None,
    ) -> BatchRecord | None:
        """Atomically: when the batch (the owner's, when `owner` is given) is in one of
        `allowed_from`, merges `changes` into its body, sets `status` (body and column)
        when given, and returns the new record; else None and nothing changes.

        The row's write lock is taken before it is read (SQLite: BEGIN IMMEDIATE;
        PostgreSQL: SELECT ... FOR UPDATE): of concurrent transitions from one state,
        exactly one wins and the others see its result."""
        await self.start()
        query = select(BATCHES).where(BATCHES.c.id == batch_id)
        if owner is not None:
            query = query.where(BATCHES.c.owner == owner)
        async with self._connect(begin=True, write_lock=True) as conn:
            row = (await conn.execute(query.with_for_update())).first()
            if row is None or row.status not in allowed_from:
                return None
            record = _batch(row)
            record.body.update(changes)
            if status is not None:
                record.status = status
                record.body["status"] = status
            await conn.execute(
                update(BATCHES)
                .where(BATCHES.c.id == batch_id)
                .values(status=record.status, body=_dumps(record.body))
            )
        return record

    async def active_batches(self) -> list[BatchRecord]:
        """Every owner's batches that are not finished (validating, in_progress,
        finalizing, cancelling), oldest first: what the batch workers drive."""
        await self.start()
        query = (
            select(BATCHES)
            .where(BATCHES.c.status.in_(ACTIVE_BATCH_STATUSES))
            .order_by(BATCHES.c.created_at.asc(), BATCHES.c.id.asc())
        )
        async with self._connect() as conn:
            rows = (await conn.execute(query)).all()
        return [_batch(r) for r in rows]

    async def claim_batch(self, batch_id: str, worker: str, lease_s: float) -> bool:
        """Takes the batch's lease for `lease_s` seconds, or renews it: True when it was
        free, already `worker`'s, or expired (one conditional UPDATE: atomic)."""
        await self.start()
        now = time.time()
        free = or_(
            BATCHES.c.lease_owner.is_(None),
            BATCHES.c.lease_owner == worker,
            BATCHES.c.lease_until < now,
        )
        async with self._connect(begin=True) as conn:
            done = await conn.execute(
                update(BATCHES)
                .where(BATCHES.c.id == batch_id, free)
                .values(lease_owner=worker, lease_until=now + lease_s)
            )
        return done.rowcount > 0

    async def release_batch(self, batch_id: str, worker: str) -> None:
        """Gives the lease up, if `worker` holds it."""
        await self.start()
        async with self._connect(begin=True) as conn:
            await conn.execute(
                update(BATCHES)
                .where(BATCHES.c.id == batch_id, BATCHES.c.lease_owner == worker)
                .values(lease_owner=None, lease_until=None)
            )

    def _cutoff(self, now: float) -> int:
        return int(now - self.config.response_max_age_s)


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def _sqlite_pragmas(dbapi_connection: Any, connection_record: Any) -> None:
    """Each new SQLite connection: wait for another replica's write instead of failing
    at once, and WAL (readers and one writer at the same time). The driver's own
    transaction handling is off (it would begin only before the first write, after the
    reads): `_sqlite_begin` begins every transaction."""
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA busy_timeout = {int(QUERY_TIMEOUT_S * 1000)}")
    cursor.execute("PRAGMA journal_mode = WAL")
    cursor.close()


def _sqlite_begin(conn: Connection) -> None:
    """SQLite's BEGIN at the start of each transaction: DEFERRED (the lock taken by the
    first write), or IMMEDIATE (the write lock at once) where the connection's execution
    option `sqlite_begin` asks for it (Store._connect's `write_lock`)."""
    mode = conn.get_execution_options().get("sqlite_begin", "DEFERRED")
    conn.exec_driver_sql(f"BEGIN {mode}")


def _file(row: Row[Any]) -> FileRecord:
    return FileRecord(
        id=row.id,
        owner=row.owner,
        purpose=row.purpose,
        filename=row.filename,
        bytes=row.bytes,
        created_at=row.created_at,
        blob_key=row.blob_key,
        lines=row.lines,
    )


def _batch(row: Row[Any]) -> BatchRecord:
    return BatchRecord(
        id=row.id,
        owner=row.owner,
        status=row.status,
        created_at=row.created_at,
        body=json.loads(row.body),
        lease_owner=row.lease_owner,
        lease_until=row.lease_until,
    )


def _after(table: Table, owner: str, after: str, descending: bool) -> ColumnElement[bool]:
    """Rows past the cursor row `after` (the owner's) in (created_at, id) order; an
    unknown cursor matches nothing."""
    at = select(table.c.created_at).where(table.c.owner == owner, table.c.id == after)
    cursor = at.scalar_subquery()
    if descending:
        return or_(
            table.c.created_at < cursor, and_(table.c.created_at == cursor, table.c.id < after)
        )
    return or_(table.c.created_at > cursor, and_(table.c.created_at == cursor, table.c.id > after))
