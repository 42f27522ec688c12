"""Model addressing and catalog building, on controller details shaped as Serve's."""

from deployments.contract import MODEL_CARD_KEY
from ingress.catalog import Catalog, entries_from_details


def _app(model, version, default=False, status="RUNNING", aliases=()):
    card = {"model": model, "version": version, "tasks": ["chat", "completion"],
            "default": default, "aliases": list(aliases)}
    return {"status": status, "message": "", "deployments": {"LLM": {
        "deployment_config": {"user_config": {MODEL_CARD_KEY: card}},
        "replicas": [{"state": "RUNNING"}], "target_num_replicas": 1}}}


DETAILS = {"applications": {
    "openai": {"status": "RUNNING", "deployments": {"OpenAIIngress": {
        "deployment_config": {}, "replicas": []}}},
    "llama-v9": _app("org/llama-3.1", "9"),
    "llama-v10": _app("org/llama-3.1", "10"),
    "llama-old": _app("org/llama-3.1", "2", default=True, aliases=("alias/x",)),
    "custom-123": _app("someone/custom", "v1", status="DEPLOYING"),
}}


def _catalog() -> Catalog:
    c = Catalog(fetch=None)  # type: ignore[arg-type]
    c.load(entries_from_details(DETAILS))
    return c


def test_apps_without_card_are_not_models():
    assert {e.deploy_id for e in entries_from_details(DETAILS)} == {
        "llama-v9", "llama-v10", "llama-old", "custom-123"}


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
    assert ids == ["org/llama-3.1", "org/llama-3.1:2", "alias/x", "alias/x:2",
                   "deploy_id:llama-old"]
    assert "org/llama-3.1" not in c.routable_ids(c.resolve("deploy_id:llama-v9"))
