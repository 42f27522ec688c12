"""Model addressing and catalog building, on controller details shaped as Serve's, the single-flight miss → refresh → retry, and the startup progress read beside it."""

import asyncio
import json

import pytest

from deployments.contract import (
    ADAPTERS_KEY,
    MODEL_CARD_ENV,
    MODEL_CARD_KEY,
    StartupProgress,
    progress_key,
)
from ingress.catalog import Catalog, entries_from_details, progress_keys
from tests.ingress.fakes import FakeController, app_details
from tests.waits import until


def _app(model, version, default=False, status="RUNNING", aliases=()):
    card = {
        "model": model,
        "version": version,
        "tasks": ["chat", "completion"],
        "default": default,
        "aliases": list(aliases),
    }
    return {
        "status": status,
        "message": "",
        "deployments": {
            "LLM": {
                "deployment_config": {"user_config": {MODEL_CARD_KEY: card}},
                "replicas": [{"state": "RUNNING"}],
                "target_num_replicas": 1,
            }
        },
    }


DETAILS = {
    "applications": {
        "openai": {
            "status": "RUNNING",
            "deployments": {"OpenAIIngress": {"deployment_config": {}, "replicas": []}},
        },
        "llama-v9": _app("org/llama-3.1", "9"),
        "llama-v10": _app("org/llama-3.1", "10"),
        "llama-old": _app("org/llama-3.1", "2", default=True, aliases=("alias/x",)),
        "custom-123": _app("someone/custom", "v1", status="DEPLOYING"),
    }
}


def _catalog() -> Catalog:
    c = Catalog(fetch=None)  # type: ignore[arg-type]
    c.load(entries_from_details(DETAILS))
    return c


def test_apps_without_card_are_not_models():
    assert {e.deploy_id for e in entries_from_details(DETAILS)} == {
        "llama-v9",
        "llama-v10",
        "llama-old",
        "custom-123",
    }


def test_name_resolves_to_declared_default():
    assert _catalog().resolve("org/llama-3.1").deploy_id == "llama-old"
    assert _catalog().resolve("alias/x").deploy_id == "llama-old"


def test_name_without_default_takes_highest_version_naturally():
    c = Catalog(fetch=None)  # type: ignore[arg-type]
    apps = {k: v for k, v in DETAILS["applications"].items() if k != "llama-old"}
    c.load(entries_from_details({"applications": apps}))
    assert c.resolve("org/llama-3.1").deploy_id == "llama-v10"  # 10 > 9


def test_version_and_deploy_id_addressing():
    c = _catalog()
    assert c.resolve("org/llama-3.1:9").deploy_id == "llama-v9"
    assert c.resolve("org/llama-3.1:10").deploy_id == "llama-v10"
    assert c.resolve("deploy_id:custom-123").card.model == "someone/custom"
    assert c.resolve("deploy_id:custom-123").status == "DEPLOYING"


def test_unknown_forms_do_not_resolve():
    c = _catalog()
    for model in ("org/llama-3.1:11", "org/llama", "deploy_id:nope", "", ":", "deploy_id:"):
        assert c.resolve(model) is None, model


def test_routable_ids_cover_every_form():
    c = _catalog()
    ids = c.routable_ids(c.resolve("deploy_id:llama-old"))
    assert ids == [
        "org/llama-3.1",
        "org/llama-3.1:2",
        "alias/x",
        "alias/x:2",
        "deploy_id:llama-old",
    ]
    assert "org/llama-3.1" not in c.routable_ids(c.resolve("deploy_id:llama-v9"))


def test_unreadable_card_is_skipped():
    details = {
        "applications": {
            "bad": app_details("m", "1", ("chat",), max_concurrent_requests=0),
            "good": app_details("m", "2", ("chat",)),
        }
    }
    assert [e.deploy_id for e in entries_from_details(details)] == ["good"]


def test_replica_states_as_enum_members_are_read():
    class State:
        value = "RUNNING"

    details = {"applications": {"a": app_details("m")}}
    details["applications"]["a"]["deployments"]["Model"]["replicas"] = [
        {"state": State()},
        {"state": "STARTING"},
    ]
    assert entries_from_details(details)[0].running_replicas == 1


@pytest.mark.anyio
async def test_concurrent_misses_share_one_refresh():
    controller = FakeController({"a": app_details("m")}, delay_s=0.05)
    catalog = Catalog(fetch=controller, miss_refresh_s=0.5)
    results = await asyncio.gather(
        *(catalog.find(lambda i=i: catalog.resolve(f"unknown-{i}")) for i in range(500))
    )
    assert results == [None] * 500
    assert controller.fetches <= 2
    assert catalog.resolve("m") is not None  # the one refresh did load the view


@pytest.mark.anyio
async def test_miss_refreshes_and_finds_a_newly_deployed_model():
    controller = FakeController({})
    catalog = Catalog(fetch=controller, miss_refresh_s=0.0)
    assert await catalog.find(lambda: catalog.resolve("m")) is None
    controller.apps["new-1"] = app_details("m")
    found = await catalog.find(lambda: catalog.resolve("m"))
    assert found is not None and found.deploy_id == "new-1"
    assert controller.fetches == 2


@pytest.mark.anyio
async def test_misses_within_miss_refresh_s_do_not_refresh_again():
    controller = FakeController({})
    catalog = Catalog(fetch=controller, miss_refresh_s=60)
    for _ in range(10):
        assert await catalog.find(lambda: catalog.resolve("m")) is None
    assert controller.fetches == 1


@pytest.mark.anyio
async def test_hit_does_not_refresh():
    controller = FakeController({"a": app_details("m")})
    catalog = Catalog(fetch=controller, miss_refresh_s=0.0)
    await catalog.refresh()
    for _ in range(5):
        assert (await catalog.find(lambda: catalog.resolve("m"))).deploy_id == "a"
    assert controller.fetches == 1


@pytest.mark.anyio
async def test_failed_refresh_reaches_every_waiter_and_the_next_miss_retries():
    calls = 0

    async def flaky() -> dict:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.01)
        if calls == 1:
            raise ConnectionError("controller restarting")
        return {"applications": {"a": app_details("m")}}

    catalog = Catalog(fetch=flaky, miss_refresh_s=0.0)
    outcomes = await asyncio.gather(*(catalog.refresh() for _ in range(20)), return_exceptions=True)
    assert all(isinstance(o, ConnectionError) for o in outcomes) and calls == 1
    assert (await catalog.find(lambda: catalog.resolve("m"))).deploy_id == "a"
    assert calls == 2


@pytest.mark.anyio
async def test_refresh_reports_application_names():
    seen: list[set[str]] = []
    controller = FakeController({"a": app_details("m"), "b": app_details("n")})
    catalog = Catalog(fetch=controller, on_refresh=seen.append)
    await catalog.refresh()
    del controller.apps["b"]
    await catalog.refresh()
    assert seen == [{"a", "b"}, {"a"}]
    assert catalog.resolve("n") is None


@pytest.mark.anyio
async def test_refresh_loop_survives_a_failing_controller():
    calls = 0

    async def fetch() -> dict:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConnectionError("down")
        return {"applications": {"a": app_details("m")}}

    catalog = Catalog(fetch=fetch, refresh_interval_s=0.01)
    loop = asyncio.ensure_future(catalog.run_refresh_loop())
    try:
        await until(lambda: catalog.resolve("m"), "a refresh after the failed one")
    finally:
        loop.cancel()
    assert calls >= 2


@pytest.mark.anyio
async def test_refresh_after_an_abandoned_read_reads_the_controller_again():
    # A read whose every waiter was cancelled (the client that missed went away) still
    # completes in the background; a later refresh must read the controller anew rather
    # than reuse that finished read (or re-raise its old failure).
    controller = FakeController({"a": app_details("m")}, delay_s=0.02)
    catalog = Catalog(fetch=controller)
    waiter = asyncio.ensure_future(catalog.refresh())
    await asyncio.sleep(0.005)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    await asyncio.sleep(0.05)  # the abandoned read finishes meanwhile
    assert controller.fetches == 1
    controller.apps["b"] = app_details("n")
    await catalog.refresh()
    assert controller.fetches == 2
    assert catalog.resolve("n") is not None


# --- why a model does not serve yet ---------------------------------------------------


def _starting(pid: int | None, replica_id: str = "r1") -> dict:
    details = app_details("m", status="DEPLOYING", running=0)
    details["deployments"]["Model"]["replicas"] = [
        {"state": "STARTING", "pid": pid, "replica_id": replica_id, "start_time_s": 0}
    ]
    return details


PROGRESS = StartupProgress(doing="preparing model: converting weights", step=3, total=5)


def test_progress_is_read_only_for_replicas_starting_with_a_worker():
    details = {
        "applications": {
            "placed": _starting(pid=7, replica_id="a1"),
            "unplaced": _starting(pid=None, replica_id="b1"),
            "running": app_details("n"),
        }
    }
    assert progress_keys(details) == [progress_key("placed", "a1")]


def test_published_progress_becomes_the_status_message():
    details = {"applications": {"gemma": _starting(pid=7)}}
    progress = {progress_key("gemma", "r1"): PROGRESS.model_dump_json().encode()}
    (entry,) = entries_from_details(details, progress)
    assert entry.status_message == "preparing model: converting weights (3/5)"
    (bare,) = entries_from_details(details, {progress_key("gemma", "r1"): b"garbage"})
    assert bare.status_message == "starting"
    (running,) = entries_from_details({"applications": {"a": app_details("m")}}, progress)
    assert running.status_message is None


@pytest.mark.anyio
async def test_refresh_reads_progress_only_while_a_replica_starts():
    asked: list[list[str]] = []

    async def read_progress(keys: list[str]) -> dict[str, bytes]:
        asked.append(keys)
        return {keys[0]: PROGRESS.model_dump_json().encode()}

    controller = FakeController({"gemma": _starting(pid=7)})
    catalog = Catalog(fetch=controller, read_progress=read_progress)
    await catalog.refresh()
    assert catalog.resolve("m").status_message == "preparing model: converting weights (3/5)"
    controller.apps["gemma"] = app_details("m")  # it runs now: nothing to read
    await catalog.refresh()
    assert asked == [[progress_key("gemma", "r1")]]
    assert catalog.resolve("m").status_message is None


@pytest.mark.anyio
async def test_a_failing_progress_read_does_not_fail_the_refresh():
    async def read_progress(keys: list[str]) -> dict[str, bytes]:
        raise ConnectionError("GCS restarting")

    catalog = Catalog(fetch=FakeController({"a": _starting(pid=7)}), read_progress=read_progress)
    await catalog.refresh()
    assert catalog.resolve("m").status_message == "starting"


def _lora_app(adapters, *, card_in_env=False, default=False):
    app = _app("org/lora", "base", default=default)
    config = app["deployments"]["LLM"]["deployment_config"]
    card = config["user_config"][MODEL_CARD_KEY]
    if card_in_env:  # a serve_config.yaml user_config override replaced the card
        config["user_config"] = {}
        config["ray_actor_options"] = {
            "runtime_env": {"env_vars": {MODEL_CARD_ENV: json.dumps(card)}}
        }
    config["user_config"][ADAPTERS_KEY] = adapters
    return app


ADAPTERS = [
    {"version": "support-v3", "source": "/a", "max_concurrent_requests": 2},
    {"version": "sales", "source": "/b"},
]


def test_adapters_are_versions_of_their_application():
    entries = entries_from_details({"applications": {"lora-1": _lora_app(ADAPTERS)}})
    by_key = {e.key: e for e in entries}
    assert set(by_key) == {"lora-1", "lora-1/support-v3", "lora-1/sales"}
    own, shared = by_key["lora-1/support-v3"], by_key["lora-1/sales"]
    assert own.deploy_id == shared.deploy_id == "lora-1"
    assert own.card.version == "support-v3" and own.card.base_version == "base"
    assert own.adapter is not None and own.adapter.source == "/a"
    assert (own.limit_key, own.card.max_concurrent_requests) == ("lora-1/support-v3", 2)
    assert shared.limit_key == "lora-1"  # shares the base's budget
    assert by_key["lora-1"].adapter is None and by_key["lora-1"].card.base_version is None

    c = Catalog(fetch=None)  # type: ignore[arg-type]
    c.load(entries)
    assert c.resolve("org/lora:sales") is shared
    assert c.resolve("deploy_id:lora-1/support-v3") is own
    assert c.resolve("deploy_id:lora-1") is by_key["lora-1"]
    assert c.resolve("org/lora") is by_key["lora-1"]  # no adapter is the default
    assert c.routable_ids(own) == ["org/lora:support-v3", "deploy_id:lora-1/support-v3"]


def test_a_default_adapter_wins_the_plain_name_over_its_base():
    adapters = [{"version": "tuned", "source": "/a", "default": True}]
    c = Catalog(fetch=None)  # type: ignore[arg-type]
    c.load(entries_from_details({"applications": {"l": _lora_app(adapters, default=True)}}))
    found = c.resolve("org/lora")
    assert found is not None and found.key == "l/tuned"
    assert c.resolve("org/lora:base") is not None


def test_the_card_survives_a_user_config_override():
    entries = entries_from_details(
        {"applications": {"l": _lora_app(ADAPTERS[1:], card_in_env=True)}}
    )
    assert [e.key for e in entries] == ["l", "l/sales"]


def test_unreadable_or_clashing_adapters_are_left_out_alone():
    adapters = [
        {"version": "ok", "source": "/a"},
        {"version": "ok", "source": "/b"},  # taken
        {"version": "base", "source": "/c"},  # the base's own
        {"version": "bad version", "source": "/d"},
        {"source": "/e"},
        "nonsense",
    ]
    entries = entries_from_details({"applications": {"l": _lora_app(adapters)}})
    assert [e.key for e in entries] == ["l", "l/ok"]
    assert entries[1].adapter is not None and entries[1].adapter.source == "/a"
