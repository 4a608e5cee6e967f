"""The routes under ``/v1``."""

from fastapi import APIRouter

from service.routes import (
    analyses,
    audits,
    compare,
    datasets,
    exports,
    models,
    series,
    system,
)

api_router = APIRouter(prefix="/v1")
for _module in (
    system,
    models,
    datasets,
    analyses,
    series,
    compare,
    exports,
    audits,
):
    api_router.include_router(_module.router)

__all__ = ["api_router"]
