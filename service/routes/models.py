"""``/v1/models``: weight files, validated by a worker after upload."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from service import checks, store
from service.openapi import errors
from service.routes.deps import (
    AdminKey,
    Limit,
    Offset,
    QueueDep,
    ReadKey,
    SessionDep,
    StorageDep,
    SubmitKey,
    enqueue_validation,
    form_body,
    remove_upload,
)
from service.schemas import (
    ModelPublic,
    ModelsPublic,
    parse_json_object,
)
from service.storage import weights_format

router = APIRouter(prefix="/models", tags=["models"])
_FORM = form_body(
    {
        "file": {"type": "string", "format": "binary"},
        "architecture": {"type": "string", "example": "mlp"},
        "architecture_config": {"type": "string", "description": "a JSON object"},
    },
    required=["file", "architecture"],
)


@router.post("", status_code=201, openapi_extra=_FORM, responses=errors(507))
async def create_model(
    request: Request,
    key: SubmitKey,
    session: SessionDep,
    storage: StorageDep,
    queue: QueueDep,
) -> ModelPublic:
    """Upload weights (safetensors or a torch.save state dict) for an architecture."""
    fields = ("architecture", "architecture_config")
    async with storage.receive(
        request, max_bytes=key.max_upload_bytes, fields=fields
    ) as upload:
        config = parse_json_object(
            upload.fields.get("architecture_config"), "architecture_config"
        )
        architecture = checks.architecture(upload.fields.get("architecture"), config)
        fmt = weights_format(upload)
        storage.keep(upload)
    model = await run_in_threadpool(
        store.create_model,
        session,
        key.team_id,
        sha256=upload.sha256,
        size=upload.size,
        format=fmt,
        architecture=architecture,
        architecture_config=config,
        filename=upload.filename,
    )
    await run_in_threadpool(
        enqueue_validation, session, storage, queue, "model", key.team_id, model.id
    )
    return model


@router.get("")
def list_models(
    key: ReadKey, session: SessionDep, limit: Limit = 50, offset: Offset = 0
) -> ModelsPublic:
    """The team's models, newest first, with the total count."""
    return store.list_models(session, key.team_id, limit=limit, offset=offset)


@router.get("/{model_id}")
def get_model(model_id: str, key: ReadKey, session: SessionDep) -> ModelPublic:
    """One model; its status says whether it passed validation."""
    return store.get_model(session, key.team_id, model_id)


@router.delete("/{model_id}", status_code=204, responses=errors(409))
def delete_model(
    model_id: str, key: AdminKey, session: SessionDep, storage: StorageDep
) -> None:
    """Delete a model (its finished analyses stay); needs the admin scope."""
    remove_upload(session, storage, "model", key.team_id, model_id)
