"""The API's documentation page, served from files shipped with the package.

Swagger UI's dist files come from the ``swagger-ui-bundle-v2`` wheel (installed
with bottlelens), so ``/v1/docs`` works with no internet: nothing is fetched from
a CDN, the validator badge is off, and the favicon is Swagger UI's own.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from swagger_ui_bundle import swagger_ui_path

DOCS_URL = "/v1/docs"
ASSETS_URL = "/v1/docs/assets"


def add_docs(app: FastAPI, openapi_url: str) -> None:
    """``GET /v1/docs`` (Swagger UI over ``openapi_url``) and ``/docs`` pointing
    to it; neither is an operation of the API."""
    app.mount(ASSETS_URL, StaticFiles(directory=swagger_ui_path), name="docs-assets")

    @app.get(DOCS_URL, include_in_schema=False)
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=openapi_url,
            title=f"{app.title}: API",
            swagger_js_url=f"{ASSETS_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS_URL}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS_URL}/favicon-32x32.png",
            swagger_ui_parameters={"validatorUrl": None},
        )

    @app.get("/docs", include_in_schema=False)
    def docs_elsewhere() -> RedirectResponse:
        return RedirectResponse(DOCS_URL)
