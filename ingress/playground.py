"""GET / and GET /playground: the browser playground, one page of plain HTML, CSS and
ES modules shipped in this package (ingress/playground/, no build step).

The page itself is public (AuthMiddleware guards /v1/openai only); its API calls
carry the key a person types into it. Its files are read once, when the app is
built, and served from memory by name: nothing a request names ever reaches the
file system. Every answer carries a Content-Security-Policy that admits only this
origin's scripts, styles and API (images also as data: and blob: URLs, which is how
generated images are shown and downloaded), so model text can never run as code.

The page finds the API relative to its own URL, so it works under any route prefix
("/", "/secure/", ".../playground").
"""

from __future__ import annotations

from pathlib import Path

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

PAGE_DIR = Path(__file__).with_name("playground")
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
}
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; "
    "script-src 'self'; connect-src 'self'"
)
HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # Small files that change with each release: always revalidate, never stale.
    "Cache-Control": "no-cache",
}


def load_assets(directory: Path = PAGE_DIR) -> dict[str, tuple[bytes, str]]:
    """The playground's files by name: (content, content type).

    Raises:
        FileNotFoundError: the package was installed without its page (see
            [tool.setuptools.package-data] in pyproject.toml).
    """
    assets = {
        path.name: (path.read_bytes(), CONTENT_TYPES[path.suffix])
        for path in sorted(directory.iterdir())
        if path.is_file() and path.suffix in CONTENT_TYPES
    }
    if "index.html" not in assets:
        raise FileNotFoundError(f"the playground page is missing: no {directory}/index.html")
    return assets


def playground_routes(directory: Path = PAGE_DIR) -> list[BaseRoute]:
    """GET / and /playground (the page) and /playground/{name} (its scripts and styles).

    Args:
        directory: where the page's files are (the package's own by default).
    """
    assets = load_assets(directory)

    def answer(name: str) -> Response:
        content, media_type = assets[name]
        return Response(content, media_type=media_type, headers=HEADERS)

    async def page(request: Request) -> Response:
        return answer("index.html")

    async def asset(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in assets:
            raise HTTPException(404)
        return answer(name)

    return [
        Route("/", page, methods=["GET"]),
        Route("/playground", page, methods=["GET"]),
        Route("/playground/{name}", asset, methods=["GET"]),
    ]
