"""``/v1/datasets``: uploaded files or built-in specs, validated by a worker."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from service import checks, store
from service.errors import InvalidInput
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
from service.schemas import DatasetPublic, DatasetsPublic
from service.storage import Storage, Upload, dataset_format

router = APIRouter(prefix="/datasets", tags=["datasets"])
_FORM = form_body(
    {
        "file": {"type": "string", "format": "binary"},
        "spec": {"type": "string", "example": "synthetic:sphere?d=2&D=16&n=500"},
    },
    required=[],
    one_of=["file", "spec"],
)


@router.post("", status_code=201, openapi_extra=_FORM, responses=errors(507))
async def create_dataset(
    request: Request,
    key: SubmitKey,
    session: SessionDep,
    storage: StorageDep,
    queue: QueueDep,
) -> DatasetPublic:
    """Upload a .npz/.safetensors/.csv file, or name a built-in with ``spec``."""
    async with storage.receive(
        request, max_bytes=key.max_upload_bytes, fields=("spec",)
    ) as upload:
        created = _from_form(upload, storage, key.max_upload_bytes)
    dataset = await run_in_threadpool(
        lambda: store.create_dataset(session, key.team_id, **created)
    )
    await run_in_threadpool(
        enqueue_validation, session, storage, queue, "dataset", key.team_id, dataset.id
    )
    return dataset


@router.get("")
def list_datasets(
    key: ReadKey, session: SessionDep, limit: Limit = 50, offset: Offset = 0
) -> DatasetsPublic:
    """The team's datasets, newest first, with the total count."""
    return store.list_datasets(session, key.team_id, limit=limit, offset=offset)


@router.get("/{dataset_id}")
def get_dataset(dataset_id: str, key: ReadKey, session: SessionDep) -> DatasetPublic:
    """One dataset; n_samples, sample_shape, dtype and has_labels once validated."""
    return store.get_dataset(session, key.team_id, dataset_id)


@router.delete("/{dataset_id}", status_code=204, responses=errors(409))
def delete_dataset(
    dataset_id: str, key: AdminKey, session: SessionDep, storage: StorageDep
) -> None:
    """Delete a dataset (its finished analyses stay); needs the admin scope."""
    remove_upload(session, storage, "dataset", key.team_id, dataset_id)


def _from_form(upload: Upload, storage: Storage, max_bytes: int) -> dict[str, Any]:
    """A built-in spec, or the uploaded file moved to its hash-derived path."""
    spec = upload.fields.get("spec")
    if spec is not None:
        if upload.tmp is not None:
            raise InvalidInput("send either a file or a spec, not both")
        spec = checks.dataset_spec(spec, max_bytes=max_bytes)
        return {"format": "builtin", "spec": spec}
    fmt = dataset_format(upload)
    storage.keep(upload)
    return {
        "format": fmt,
        "sha256": upload.sha256,
        "size": upload.size,
        "filename": upload.filename,
    }
