"""The playground page: served at / and /playground without a key (its API calls carry
one), from the package's own files only, with a CSP that admits no inline code; the
page's scripts never parse text as HTML; and its pure modules pass their node tests."""

import re
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest

from ingress.playground import CONTENT_SECURITY_POLICY, PAGE_DIR, load_assets
from tests.ingress.fakes import API, error_of, standard_stack

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parents[2]
KEYS_ENV = "TEST_PLAYGROUND_KEYS"


def _secure_stack(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv(KEYS_ENV, "key-1")
    return standard_stack(config={"auth": {"enabled": True, "api_keys_env": KEYS_ENV}})


def _check_headers(response, content_type: str) -> None:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == content_type
    assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert response.headers["x-content-type-options"] == "nosniff"


@pytest.mark.parametrize("path", ["/", "/playground"])
async def test_page_is_public_even_with_auth_on(monkeypatch, path):
    async with _secure_stack(monkeypatch).client() as client:
        page = await client.get(path)
        _check_headers(page, "text/html; charset=utf-8")
        assert b'<script type="module" src="playground/app.js">' in page.content
        error_of(await client.get(f"{API}/models"), 401)  # the API still wants the key


async def test_every_file_the_page_loads_is_served_with_its_type():
    """Follows index.html's links and each module's imports, as a browser would."""
    async with standard_stack().client() as client:
        html = (await client.get("/")).text
        pending = re.findall(r'(?:src|href)="playground/([\w.-]+)"', html)
        seen: set[str] = set()
        while pending:
            name = pending.pop()
            if name in seen:
                continue
            seen.add(name)
            response = await client.get(f"/playground/{name}")
            suffix = name.rsplit(".", 1)[1]
            _check_headers(
                response, {"js": "text/javascript", "css": "text/css"}[suffix] + "; charset=utf-8"
            )
            pending += re.findall(r'from "\./([\w.-]+)"', response.text)
    assert seen == {p.name for p in PAGE_DIR.iterdir() if p.suffix in (".js", ".css")}


async def test_page_and_files_under_a_route_prefix():
    """The page finds its files and the API relative to its own URL, so a prefix
    without its slash is redirected to it (else relative URLs would leave the prefix)."""
    transport = httpx.ASGITransport(app=standard_stack().app, root_path="/pg")
    async with httpx.AsyncClient(transport=transport, base_url="http://ingress") as client:
        moved = await client.get("/pg")
        assert (moved.status_code, moved.headers["location"]) == (307, "http://ingress/pg/")
        _check_headers(await client.get("/pg/"), "text/html; charset=utf-8")
        _check_headers(await client.get("/pg/playground/app.js"), "text/javascript; charset=utf-8")


@pytest.mark.parametrize(
    "path",
    ["/playground/nope.js", "/playground/..%2Fplayground.py", "/playground/%2e%2e", "/index.html"],
)
async def test_other_names_are_a_404_that_never_reaches_the_disk(path):
    async with standard_stack().client() as client:
        error_of(await client.get(path), 404)


async def test_only_get():
    async with standard_stack().client() as client:
        assert (await client.post("/playground", content=b"")).status_code == 405
        assert (await client.head("/")).status_code == 200


def test_page_has_no_inline_code_or_styles():
    html = (PAGE_DIR / "index.html").read_text()
    assert not re.search(r"\son\w+\s*=", html, re.IGNORECASE)  # no inline handlers
    assert not re.search(r"<script(?![^>]*\bsrc=)", html)  # no inline scripts
    assert not re.search(r"<style|\sstyle\s*=", html)  # style-src 'self' forbids both


@pytest.mark.parametrize("name", sorted(p.name for p in PAGE_DIR.glob("*.js")))
def test_scripts_never_parse_text_as_html(name):
    source = (PAGE_DIR / name).read_text()
    for sink in (
        "innerHTML",
        "outerHTML",
        "insertAdjacentHTML",
        "document.write",
        "eval(",
        "new Function",
    ):
        assert sink not in source, f"{name} uses {sink}: build nodes with dom.el / textContent"


def test_a_package_without_its_page_fails_loudly(tmp_path):
    (tmp_path / "app.js").write_text("")
    with pytest.raises(FileNotFoundError, match=r"index\.html"):
        load_assets(tmp_path)


def test_the_package_ships_every_page_file():
    import tomllib

    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    globs = pyproject["tool"]["setuptools"]["package-data"]["ingress"]
    for path in PAGE_DIR.iterdir():
        assert any(path.relative_to(PAGE_DIR.parent).match(g) for g in globs), path


def test_pure_modules_pass_their_node_tests():
    node = shutil.which("node")
    assert node, "node is missing: run scripts/install_test_tools.sh"
    result = subprocess.run(
        [node, "--test", str(ROOT / "tests/browser/units.test.mjs")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
