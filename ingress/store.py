"""The state store: what the ingress keeps between requests.

What: the stored responses of the Responses API (table `responses`: each response as
returned, its request's input items, and the context the model saw, for
`previous_response_id`), per owner (the API key's id, ingress/auth.py `key_id`; "" when
auth is off); every read and write of a row names its owner. Retention: older than
`state.response_max_age_s`, or beyond `state.max_responses_per_key` per owner (the
oldest first), rows are deleted (`put_response` for its owner, `prune` for all, every
minute from the ingress's lifespan). More tables (the Batch API's files and batches)
join METADATA.

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
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    MetaData,
    String,
    Table,
    Text,
    delete,
    event,
    func,
    insert,
    select,
)
from sqlalchemy.engine import make_url
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
        return engine

    async def close(self) -> None:
        if self._engine is not None:
            await self._engine.dispose()
        self._engine, self._started = None, False

    @asynccontextmanager
    async def _connect(self, begin: bool = False) -> AsyncIterator[AsyncConnection]:
        """A pooled connection (in a transaction when `begin`), bounded by QUERY_TIMEOUT_S;
        a database failure becomes StoreUnavailable (logged here, with the masked URL)."""
        try:
            if self._engine is None:
                self._engine = self._make_engine()  # SQLite: makes its folder (an OSError)
            async with asyncio.timeout(QUERY_TIMEOUT_S):
                connect = self._engine.begin() if begin else self._engine.connect()
                async with connect as conn:
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

    def _cutoff(self, now: float) -> int:
        return int(now - self.config.response_max_age_s)


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def _sqlite_pragmas(dbapi_connection: Any, connection_record: Any) -> None:
    """Each new SQLite connection: wait for another replica's write instead of failing
    at once, and WAL (readers and one writer at the same time)."""
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA busy_timeout = {int(QUERY_TIMEOUT_S * 1000)}")
    cursor.execute("PRAGMA journal_mode = WAL")
    cursor.close()
