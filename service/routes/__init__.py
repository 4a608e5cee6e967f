"""The routes under ``/v1``."""

from fastapi import APIRouter

from service.routes import analyses, audits, datasets, models, system

api_router = APIRouter(prefix="/v1")
for _module in (system, models, datasets, analyses, audits):
    api_router.include_router(_module.router)

__all__ = ["api_router"]
