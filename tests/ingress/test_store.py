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
from ingress.store import (
    METADATA,
    RESPONSES,
    BatchRecord,
    FileRecord,
    Store,
    StoredResponse,
    StoreUnavailable,
)

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


# --- files and batches (the Files and Batch APIs) ------------------------------------


def _file(id: str, owner: str = "key-a", created_at: int = NOW, purpose: str = "batch"):
    return FileRecord(
        id=id,
        owner=owner,
        purpose=purpose,
        filename=f"{id}.jsonl",
        bytes=123,
        created_at=created_at,
        blob_key=f"files/{id}",
        lines=3,
    )


def _batch(id: str, owner: str = "key-a", created_at: int = NOW, status: str = "validating"):
    body = {"id": id, "object": "batch", "status": status, "request_counts": {"total": 0}}
    return BatchRecord(id=id, owner=owner, status=status, created_at=created_at, body=body)


async def test_files_round_trip_and_owners(store: Store) -> None:
    f = _file("file-1")
    await store.put_file(f)
    assert await store.get_file("key-a", "file-1") == f
    assert await store.get_file("key-b", "file-1") is None
    assert await store.get_file("", "file-1") is None
    assert await store.list_files("key-b", None, 10, None) == ([], False)
    assert await store.count_files("key-a") == 1 and await store.count_files("key-b") == 0
    assert await store.delete_file("key-b", "file-1") is None
    assert await store.delete_file("key-a", "file-1") == f
    assert await store.delete_file("key-a", "file-1") is None
    assert await store.get_file("key-a", "file-1") is None
    assert f.to_openai() == {
        "id": "file-1",
        "object": "file",
        "bytes": 123,
        "created_at": NOW,
        "filename": "file-1.jsonl",
        "purpose": "batch",
        "status": "processed",
    }


async def test_files_pages(store: Store) -> None:
    # Two share a second: the id breaks the tie.
    times = {"file-a": NOW, "file-b": NOW + 1, "file-c": NOW + 1, "file-d": NOW + 2}
    for id, at in times.items():
        await store.put_file(_file(id, created_at=at))
    await store.put_file(_file("file-o", owner="key-b", created_at=NOW + 5))
    await store.put_file(_file("file-x", created_at=NOW + 3, purpose="batch_output"))

    async def ids(**kw) -> tuple[list[str], bool]:
        args = {"purpose": "batch", "limit": 2, "after": None, **kw}
        page, more = await store.list_files("key-a", **args)
        return [f.id for f in page], more

    assert await ids() == (["file-d", "file-c"], True)
    assert await ids(after="file-c") == (["file-b", "file-a"], False)
    assert await ids(after="file-b") == (["file-a"], False)
    assert await ids(order="asc") == (["file-a", "file-b"], True)
    assert await ids(order="asc", after="file-b") == (["file-c", "file-d"], False)
    assert await ids(purpose=None, limit=10) == (
        ["file-x", "file-d", "file-c", "file-b", "file-a"],
        False,
    )
    assert await ids(after="file-o") == ([], False)  # another owner's cursor: unknown
    assert await ids(after="file-none") == ([], False)


async def test_batches_round_trip_and_pages(store: Store) -> None:
    for i in range(3):
        await store.put_batch(_batch(f"batch_{i}", created_at=NOW + i))
    await store.put_batch(_batch("batch_o", owner="key-b", created_at=NOW + 9))
    assert await store.get_batch("key-a", "batch_1") == _batch("batch_1", created_at=NOW + 1)
    assert await store.get_batch("key-b", "batch_1") is None
    page, more = await store.list_batches("key-a", 2, None)
    assert [b.id for b in page] == ["batch_2", "batch_1"] and more
    page, more = await store.list_batches("key-a", 2, "batch_1")
    assert [b.id for b in page] == ["batch_0"] and not more
    assert await store.list_batches("key-a", 2, "batch_o") == ([], False)
    active = await store.active_batches()  # every owner's, oldest first
    assert [b.id for b in active] == ["batch_0", "batch_1", "batch_2", "batch_o"]


async def test_transition_only_from_allowed_states(store: Store) -> None:
    await store.put_batch(_batch("batch_1"))
    assert await store.transition("batch_1", {"in_progress"}, "finalizing", {"x": 1}) is None
    assert await store.transition("batch_1", {"validating"}, "x", {}, owner="key-b") is None
    moved = await store.transition(
        "batch_1", {"validating"}, "in_progress", {"in_progress_at": NOW}, owner="key-a"
    )
    assert moved is not None
    assert moved.status == "in_progress" and moved.body["status"] == "in_progress"
    assert moved.body["in_progress_at"] == NOW
    assert await store.get_batch("key-a", "batch_1") == moved
    # No status: only the body changes.
    counted = await store.transition(
        "batch_1", {"in_progress"}, None, {"request_counts": {"total": 5}}
    )
    assert counted is not None and counted.status == "in_progress"
    assert counted.body["request_counts"] == {"total": 5}
    assert counted.body["in_progress_at"] == NOW
    assert [b.id for b in await store.active_batches()] == ["batch_1"]
    await store.transition("batch_1", {"in_progress"}, "completed", {})
    assert await store.active_batches() == []
    assert await store.transition("batch_none", {"validating"}, "failed", {}) is None


async def test_transition_is_atomic_under_concurrent_writers(config: StateConfig) -> None:
    """20 transitions from one state at once, from two stores (two replicas): exactly
    one wins; every other one sees the state it left and changes nothing."""
    one, two = Store(config), Store(config)
    try:
        await one.put_batch(_batch("batch_1"))
        await two.start()

        async def move(i: int) -> BatchRecord | None:
            store = one if i % 2 else two
            return await store.transition("batch_1", {"validating"}, "in_progress", {"winner": i})

        results = await asyncio.gather(*(move(i) for i in range(20)))
        winners = [r for r in results if r is not None]
        assert len(winners) == 1
        stored = await one.get_batch("key-a", "batch_1")
        assert stored is not None and stored.body["winner"] == winners[0].body["winner"]

        # Each transition reads the body, adds its own key and writes it back: at once,
        # none is lost (without the row lock, a later write would drop an earlier key).
        async def bump(i: int) -> None:
            store = one if i % 2 else two
            done = await store.transition("batch_1", {"in_progress"}, None, {f"seen_{i}": True})
            assert done is not None

        await asyncio.gather(*(bump(i) for i in range(20)))
        stored = await one.get_batch("key-a", "batch_1")
        assert stored is not None
        assert all(stored.body[f"seen_{i}"] for i in range(20))  # none overwritten
    finally:
        await one.close()
        await two.close()


async def test_claim_lease_expiry_renewal_and_release(store: Store) -> None:
    await store.put_batch(_batch("batch_1"))
    assert await store.claim_batch("batch_1", "w1", 30) is True
    assert await store.claim_batch("batch_1", "w2", 30) is False  # held
    before = await store.get_batch("key-a", "batch_1")
    assert before is not None and before.lease_owner == "w1"
    assert before.lease_until is not None and before.lease_until > time.time() + 20
    assert await store.claim_batch("batch_1", "w1", 60) is True  # renewed
    renewed = await store.get_batch("key-a", "batch_1")
    assert renewed is not None and renewed.lease_until is not None
    assert renewed.lease_until > before.lease_until
    await store.release_batch("batch_1", "w2")  # not its lease: nothing
    assert await store.claim_batch("batch_1", "w2", 30) is False
    await store.release_batch("batch_1", "w1")
    assert await store.claim_batch("batch_1", "w2", 0.2) is True  # free
    assert await store.claim_batch("batch_1", "w1", 30) is False
    await asyncio.sleep(0.3)
    assert await store.claim_batch("batch_1", "w1", 30) is True  # w2's lease expired
    assert await store.claim_batch("batch_none", "w1", 30) is False


async def test_claims_race_one_winner(store: Store) -> None:
    await store.put_batch(_batch("batch_1"))
    won = await asyncio.gather(*(store.claim_batch("batch_1", f"w{i}", 30) for i in range(10)))
    assert won.count(True) == 1


async def test_files_and_batches_when_the_database_is_dead(dead_config: StateConfig) -> None:
    store = Store(dead_config)
    try:
        for call in (
            store.put_file(_file("file-1")),
            store.list_files("key-a", None, 10, None),
            store.transition("batch_1", {"validating"}, "failed", {}),
            store.claim_batch("batch_1", "w1", 30),
        ):
            with pytest.raises(StoreUnavailable):
                await call
    finally:
        await store.close()
        # aiosqlite closes a connection that failed to open from its own thread, after
        # the error has reached us: let that finish on this test's event loop.
        await asyncio.sleep(0.2)
