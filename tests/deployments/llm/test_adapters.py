"""AdapterSet: load on first use, LRU of `capacity`, one int id per adapter source,
removal deferred until the last request ends, and InvalidAdapter for what cannot load."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from deployments.contract import AdapterSpec
from deployments.engines import AdapterRef
from deployments.errors import InvalidAdapter
from deployments.llm.adapters import AdapterSet, adapters_of


class Engine:
    """Records load/unload calls; a directory named 'corrupt' does not load."""

    def __init__(self) -> None:
        self.loaded: list[AdapterRef] = []
        self.unloaded: list[AdapterRef] = []

    async def load_adapter(self, adapter: AdapterRef) -> None:
        if Path(adapter.path).name == "corrupt":
            raise InvalidAdapter("its files do not read as a LoRA adapter")
        self.loaded.append(adapter)

    async def unload_adapter(self, adapter: AdapterRef) -> None:
        self.unloaded.append(adapter)


@pytest.fixture
def dirs(tmp_path: Path) -> dict[str, str]:
    out = {}
    for name in ("a", "b", "c", "a2", "corrupt"):
        (tmp_path / name).mkdir()
        out[name] = str(tmp_path / name)
    return out


def _set(engine: Engine, capacity: int = 2, enabled: bool = True) -> AdapterSet:
    return AdapterSet(engine, enabled=enabled, capacity=capacity)  # type: ignore[arg-type]


def test_loads_once_then_reuses_and_evicts_the_least_recently_used(dirs):
    async def main() -> None:
        engine = Engine()
        adapters = _set(engine)
        a, b, c = (AdapterSpec(version=v, source=dirs[v]) for v in "abc")
        for spec in (a, a, b, a, c, b):  # c evicts b (least recent), b then reloads
            ref = await adapters.acquire(spec)
            assert ref.name == spec.version and ref.path == spec.source
            await adapters.release(spec)
        assert adapters.loads == {"a": 1, "b": 2, "c": 1}
        # Every request re-adds its adapter (a no-op in vLLM unless its LRU dropped it).
        # (a, a, b, a, c, b): a load is a load plus the re-add; c evicts b.
        assert "".join(r.name for r in engine.loaded) == "aaabbaccbb"
        # A reload keeps the adapter's int id; each adapter has its own.
        assert len({(r.name, r.int_id) for r in engine.loaded}) == 3

    asyncio.run(main())


def test_a_changed_source_is_a_new_adapter_with_a_new_id(dirs):
    async def main() -> None:
        engine = Engine()
        adapters = _set(engine)
        old = AdapterSpec(version="a", source=dirs["a"])
        new = AdapterSpec(version="a", source=dirs["a2"])
        assert old.model_id != new.model_id and old.model_id.startswith("a@")
        first, second = await adapters.acquire(old), await adapters.acquire(new)
        assert first.int_id != second.int_id and second.path == dirs["a2"]

    asyncio.run(main())


def test_a_removed_adapter_is_unloaded_after_its_last_request(dirs):
    async def main() -> None:
        engine = Engine()
        adapters = _set(engine)
        a, b = (
            AdapterSpec(version="a", source=dirs["a"]),
            AdapterSpec(version="b", source=dirs["b"]),
        )
        await adapters.acquire(a)  # in flight
        await adapters.acquire(b)
        await adapters.release(b)
        await adapters.reconfigure([])  # both removed from the config
        assert [r.name for r in engine.unloaded] == ["b"]  # idle: at once
        await adapters.release(a)
        assert [r.name for r in engine.unloaded] == ["b", "a"]  # a: when it ended

    asyncio.run(main())


def test_what_cannot_load_raises_invalid_adapter(dirs, tmp_path):
    async def main() -> None:
        adapters = _set(Engine())
        with pytest.raises(InvalidAdapter, match="not found"):
            await adapters.acquire(AdapterSpec(version="x", source=str(tmp_path / "missing")))
        with pytest.raises(InvalidAdapter, match="do not read"):
            await adapters.acquire(AdapterSpec(version="x", source=dirs["corrupt"]))
        assert adapters.loads == {}
        with pytest.raises(InvalidAdapter, match="not enabled"):
            await _set(Engine(), enabled=False).acquire(AdapterSpec(version="a", source=dirs["a"]))

    asyncio.run(main())


def test_adapters_of_reads_the_user_config_and_skips_what_does_not_read():
    got = adapters_of(
        {"adapters": [{"version": "a", "source": "/x"}, {"version": "no spaces"}, 3], "k": 1}
    )
    assert [a.version for a in got] == ["a"]
    assert adapters_of(None) == [] and adapters_of({}) == []


def test_a_failed_adapter_is_not_retried_until_its_pause_ends(dirs):
    async def main() -> None:
        engine = Engine()
        calls = []
        original = engine.load_adapter

        async def counting(ref: AdapterRef) -> None:
            calls.append(ref.name)
            await original(ref)

        engine.load_adapter = counting  # type: ignore[method-assign]
        adapters = _set(engine)
        broken = AdapterSpec(version="x", source=dirs["corrupt"])
        for _ in range(3):
            with pytest.raises(InvalidAdapter, match="do not read"):
                await adapters.acquire(broken)
        assert calls == ["x"]  # one load attempt, then the remembered reason
        why, _ = adapters._failed[broken.model_id]
        adapters._failed[broken.model_id] = (why, 0.0)  # the pause is over
        with pytest.raises(InvalidAdapter):
            await adapters.acquire(broken)
        assert calls == ["x", "x"]

    asyncio.run(main())
