"""scripts/announce.py (what scripts/serve.sh prints once the API is up): where the API
is, from the config, and one line per application, named by its plainest id."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("announce", ROOT / "scripts" / "announce.py")
assert _spec is not None and _spec.loader is not None
announce = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(announce)


def test_base_url_follows_the_configs_http_options(tmp_path):
    assert announce.base_url(str(ROOT / "serve_config.yaml")) == "http://127.0.0.1:8000"
    config = tmp_path / "c.yaml"
    config.write_text("http_options: {host: 0.0.0.0, port: 9001}\napplications: []\n")
    assert announce.base_url(str(config)) == "http://127.0.0.1:9001"


def _model(id_: str, deploy_id: str, status: str = "RUNNING", why: str | None = None) -> dict:
    return {"id": id_, "deploy_id": deploy_id, "status": status, "status_message": why}


def test_one_line_per_application_with_why_it_is_not_ready():
    models = [
        _model("org/llm:1", "llm-1", "DEPLOYING", "starting engine (2/2)"),
        _model("org/llm", "llm-1", "DEPLOYING", "starting engine (2/2)"),
        _model("deploy_id:llm-1", "llm-1", "DEPLOYING", "starting engine (2/2)"),
        _model("org/emb", "emb-1"),
        _model(
            "org/zero", "zero-1", "RUNNING", "scaled to zero: the next request starts a replica"
        ),
    ]
    assert announce.by_application(models) == {
        "llm-1": ("org/llm", "starting engine (2/2)"),
        "emb-1": ("org/emb", None),
        "zero-1": ("org/zero", None),  # serves: a request starts a replica
    }
