"""The state store (ingress/store.py), each test on SQLite and on a real PostgreSQL
(tests/postgres.py): round trip, owners kept apart, retention by age and by count, a dead
or locked database as StoreUnavailable without the URL, two replicas on one database,
a restart; and the config's check of the URL."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import AsyncIterator

import asyncpg
import pytest
from pydantic import ValidationError

from ingress import store as store_module
from ingress.config import IngressConfig, StateConfig
from ingress.store import METADATA, RESPONSES, Store, StoredResponse, StoreUnavailable

pytestmark = pytest.mark.anyio
NOW = int(time.time())


@pytest.fixture(params=["sqlite", "postgresql"])
def config(request: pytest.FixtureRequest, tmp_path) -> StateConfig:
    """A fresh, empty database's config: a new SQLite folder, or the session's
    PostgreSQL with its tables dropped (the first start makes them)."""
    if request.param == "sqlite":
        return StateConfig(data_dir=str(tmp_path / "state"))
    url = request.getfixturevalue("postgres_url")

    async def drop() -> None:
        store = Store(StateConfig(url=url))
        async with store._connect(begin=True) as conn:
            await conn.run_sync(METADATA.drop_all)
        await store.close()

    asyncio.run(drop())
    return StateConfig(url=url)


@pytest.fixture
async def store(config: StateConfig) -> AsyncIterator[Store]:
    store = Store(config)
    yield store
    await store.close()


def _response(id: str, owner: str = "key-a", created_at: int = NOW) -> StoredResponse:
    return StoredResponse(
        id=id,
        owner=owner,
        created_at=created_at,
        body={"id": id, "object": "response", "output": [{"type": "message", "text": "é\x00"}]},
        input_items=[{"id": f"msg_{id}", "type": "message", "content": "hi"}],
        context=[{"type": "message", "role": "user", "content": "earlier"}],
    )


async def test_put_get_delete_round_trip(store: Store) -> None:
    stored = _response("resp_1")
    await store.put_response(stored)
    assert await store.get_response("key-a", "resp_1") == stored
    assert await store.delete_response("key-a", "resp_1") is True
    assert await store.get_response("key-a", "resp_1") is None
    assert await store.delete_response("key-a", "resp_1") is False


async def test_another_owner_sees_nothing(store: Store) -> None:
    await store.put_response(_response("resp_1", owner="key-a"))
    assert await store.get_response("key-b", "resp_1") is None
    assert await store.get_response("", "resp_1") is None  # auth off is an owner too
    assert await store.delete_response("key-b", "resp_1") is False
    assert (await store.get_response("key-a", "resp_1")) is not None


async def test_age_retention(store: Store) -> None:
    max_age = store.config.response_max_age_s
    await store.put_response(_response("resp_old", created_at=int(NOW - max_age - 10)))
    await store.put_response(_response("resp_new"))
    assert await store.get_response("key-a", "resp_old") is None  # expired, not yet pruned
    assert await store.prune() == 1
    assert await store.prune() == 0
    assert await store.get_response("key-a", "resp_new") is not None
    assert await store.prune(now=NOW + max_age + 1) == 1  # later: the new one goes too


async def test_count_retention_per_owner(config: StateConfig) -> None:
    store = Store(config.model_copy(update={"max_responses_per_key": 3}))
    try:
        for i in range(5):
            await store.put_response(_response(f"resp_a{i}", created_at=NOW + i))
        await store.put_response(_response("resp_b0", owner="key-b", created_at=NOW - 100))
        found = [await store.get_response("key-a", f"resp_a{i}") for i in range(5)]
        assert [f is not None for f in found] == [False, False, True, True, True]
        assert await store.get_response("key-b", "resp_b0") is not None
    finally:
        await store.close()
    # A lowered bound: prune() applies it to every owner.
    lowered = Store(config.model_copy(update={"max_responses_per_key": 1}))
    try:
        assert await lowered.prune() == 2
        assert await lowered.get_response("key-a", "resp_a4") is not None
        assert await lowered.get_response("key-b", "resp_b0") is not None
    finally:
        await lowered.close()


async def test_two_replicas_share_one_database(config: StateConfig) -> None:
    one, two = Store(config), Store(config)
    try:
        await asyncio.gather(one.start(), two.start())  # both make the tables at once
        await one.put_response(_response("resp_1"))
        assert await two.get_response("key-a", "resp_1") == _response("resp_1")
        assert await two.delete_response("key-a", "resp_1") is True
        assert await one.get_response("key-a", "resp_1") is None
    finally:
        await one.close()
        await two.close()


async def test_a_row_outlives_a_restart(config: StateConfig) -> None:
    first = Store(config)
    await first.put_response(_response("resp_1"))
    await first.start()  # idempotent
    await first.close()
    second = Store(config)
    try:
        assert await second.get_response("key-a", "resp_1") == _response("resp_1")
    finally:
        await second.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def dead_config(request: pytest.FixtureRequest, tmp_path) -> StateConfig:
    """A database that cannot be reached: a PostgreSQL URL to a closed port (with a
    password), an SQLite folder where a file is in the way."""
    if request.param == "sqlite":
        (tmp_path / "blocked").write_text("")
        return StateConfig(data_dir=str(tmp_path / "blocked"))
    return StateConfig(url="postgresql+asyncpg://user:s3cretpw@127.0.0.1:9/db")


async def test_a_dead_database_is_unavailable_without_its_url(
    dead_config: StateConfig, caplog: pytest.LogCaptureFixture
) -> None:
    store = Store(dead_config)
    assert "s3cretpw" not in store.url_for_log
    caplog.set_level(logging.INFO, logger="ray.serve")
    try:
        for call in (
            store.put_response(_response("resp_1")),
            store.get_response("key-a", "resp_1"),
            store.delete_response("key-a", "resp_1"),
            store.prune(),
        ):
            with pytest.raises(StoreUnavailable) as raised:
                await call
            message = str(raised.value)
            for secret in ("s3cretpw", "user", "127.0.0.1", ":9", "blocked", "Error", "Refused"):
                assert secret not in message
            assert raised.value.__cause__ is None and raised.value.__suppress_context__
        assert caplog.records and "s3cretpw" not in caplog.text
        # The lifespan's loop logs a failed round and goes on: two rounds fail, and it is
        # cancelled while it sleeps (not while a connect is in flight in aiosqlite's thread).
        failed = len(caplog.records)
        loop = asyncio.create_task(store.run_prune_loop(interval_s=0.5))
        while len(caplog.records) < failed + 2:
            assert not loop.done()
            await asyncio.sleep(0.01)
        loop.cancel()
        with pytest.raises(asyncio.CancelledError):
            await loop
    finally:
        await store.close()


async def test_a_locked_database_times_out_then_recovers(
    config: StateConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_module, "QUERY_TIMEOUT_S", 0.5)
    store = Store(config)
    try:
        await store.start()
        sqlite_lock = pg_lock = None
        if config.url is None:  # another process's write transaction
            sqlite_lock = sqlite3.connect(store.url_for_log.split(":///")[1], isolation_level=None)
            sqlite_lock.execute("BEGIN EXCLUSIVE")
        else:
            pg_lock = await asyncpg.connect(config.url.replace("+asyncpg", ""))
            await pg_lock.execute(f"BEGIN; LOCK TABLE {RESPONSES.name} IN ACCESS EXCLUSIVE MODE")
        started = time.monotonic()
        with pytest.raises(StoreUnavailable):
            await store.put_response(_response("resp_1"))
        assert time.monotonic() - started < 5
        if sqlite_lock is not None:
            sqlite_lock.close()
        if pg_lock is not None:
            await pg_lock.close()
        await store.put_response(_response("resp_2"))
        assert await store.get_response("key-a", "resp_2") is not None
    finally:
        await store.close()


async def test_sqlite_default_folder_wal_and_mode(
    tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("OPENAI_SERVE_STATE_URL", raising=False)
    store = Store(StateConfig(data_dir="~/deep/state"))
    try:
        await store.put_response(_response("resp_1"))
        folder = tmp_path / "deep" / "state"
        assert (folder / "state.db").is_file()
        assert folder.stat().st_mode & 0o777 == 0o700
        assert store.url_for_log == f"sqlite+aiosqlite:///{folder / 'state.db'}"
        with sqlite3.connect(folder / "state.db") as plain:
            assert plain.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    finally:
        await store.close()


def test_the_url_comes_from_its_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_STATE_URL", "postgresql+asyncpg://u:s3cretpw@db.internal:5432/x")
    store = Store(StateConfig(url_env="TEST_STATE_URL"))
    assert store.url_for_log == "postgresql+asyncpg://u:***@db.internal:5432/x"
    monkeypatch.setenv("TEST_STATE_URL", "postgresql://u:s3cretpw@db.internal/x")
    with pytest.raises(ValueError, match="TEST_STATE_URL") as raised:
        Store(StateConfig(url_env="TEST_STATE_URL"))
    assert "s3cretpw" not in str(raised.value) and "postgresql+asyncpg" in str(raised.value)


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://u:s3cretpw@db/x",  # the usual slip: no +asyncpg
        "mysql+aiomysql://u:s3cretpw@db/x",
        "sqlite:///tmp/s3cretpw.db",
        "s3cretpw",
    ],
)
def test_config_refuses_another_driver(url: str) -> None:
    with pytest.raises(ValidationError) as raised:
        IngressConfig.model_validate({"state": {"url": url}})
    text = str(raised.value)
    assert "state.url" in text and "postgresql+asyncpg://" in text
    assert "s3cretpw" not in text
    assert "s3cretpw" not in repr(StateConfig(url="sqlite+aiosqlite:///s3cretpw.db"))


def test_config_accepts_both_drivers() -> None:
    for url in ("postgresql+asyncpg://u:p@db:5432/x", "sqlite+aiosqlite:////var/lib/s.db"):
        assert IngressConfig.model_validate({"state": {"url": url}}).state.url == url
