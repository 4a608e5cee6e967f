"""Uploads: streaming with a cap, hash-derived paths, refusals that need no torch."""

from __future__ import annotations

import io
import pickle
import zipfile
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from service import store
from service.db import session_scope
from service.settings import Settings
from service.storage import object_path
from tests.service.conftest import Team, make_team, safetensors_bytes, upload_model


def _files_under(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


def test_model_upload_is_validating_then_ready(
    client: TestClient, engine: Engine, team: Team, settings: Settings, sent: list
) -> None:
    content = safetensors_bytes()
    r = upload_model(client, team, content)
    assert r.status_code == 201, r.text
    model = r.json()
    assert model["status"] == "validating" and model["error"] is None
    assert model["format"] == "safetensors" and model["size"] == len(content)
    assert model["architecture_config"] == {"widths": [4, 2]}
    assert model["filename"] == "model.safetensors"
    path = object_path(settings.storage_dir, model["sha256"])
    assert path.read_bytes() == content
    assert sent == [
        {
            "name": "bottlelens.validate_upload",
            "args": ["model", model["id"]],
            "queue": "cpu",
        }
    ]
    with session_scope(engine) as s:
        job = store.get_upload_for_validation(
            s, "model", model["id"], storage_dir=settings.storage_dir
        )
    assert job is not None and job.path == str(path) and job.architecture == "mlp"
    with session_scope(engine) as s:
        store.mark_upload(
            s,
            "model",
            model["id"],
            status="rejected",
            error={"code": "checkpoint_mismatch", "message": "missing keys (2): a, b"},
        )
    got = client.get(f"/v1/models/{model['id']}", headers=team.headers("read")).json()
    assert got["status"] == "rejected"
    assert got["error"] == {
        "code": "checkpoint_mismatch",
        "message": "missing keys (2): a, b",
    }
    with session_scope(engine) as s:  # validated already: nothing to do
        assert store.get_upload_for_validation(s, "model", model["id"]) is None


def test_torch_save_zip_is_accepted_as_a_state_dict(
    client: TestClient, team: Team
) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("archive/data.pkl", b"\x80\x02}q\x00.")
        zf.writestr("archive/data/0", b"\x00" * 8)
    r = upload_model(client, team, buf.getvalue())
    assert r.status_code == 201 and r.json()["format"] == "state_dict"


def test_oversized_upload_is_413_and_leaves_nothing_on_disk(
    client: TestClient, team: Team, settings: Settings, sent: list
) -> None:
    big = safetensors_bytes(n=settings.max_upload_bytes // 4 + 10)
    r = upload_model(client, team, big)
    assert r.status_code == 413
    assert r.json()["code"] == "too_large" and "limit" in r.json()["message"]
    assert _files_under(settings.storage_dir) == set()
    assert sent == []

    # A chunked body without Content-Length is cut off while it streams in.
    def chunks():
        boundary = b"--xyz\r\n"
        yield (
            boundary
            + b'Content-Disposition: form-data; name="architecture"\r\n\r\nmlp\r\n'
        )
        yield (
            boundary
            + b'Content-Disposition: form-data; name="file"; filename="m"\r\n\r\n'
        )
        for _ in range(100):
            yield b"\x00" * 4096
        yield b"\r\n--xyz--\r\n"

    r = client.post(
        "/v1/models",
        headers={**team.headers(), "Content-Type": "multipart/form-data; boundary=xyz"},
        content=chunks(),
    )
    assert r.status_code == 413
    assert _files_under(settings.storage_dir) == set()


def test_team_upload_limit_overrides_the_default(
    client: TestClient, engine: Engine
) -> None:
    small = make_team(engine, "small", max_upload_bytes=100)
    assert upload_model(client, small, safetensors_bytes(n=100)).status_code == 413
    assert upload_model(client, small, safetensors_bytes(n=2)).status_code == 201


@pytest.mark.parametrize(
    ("fields", "needle"),
    [
        ({"architecture_config": "{bad"}, "not valid JSON"),
        ({"architecture_config": "[1, 2]"}, "must be a JSON object"),
        ({"architecture_config": '{"x": NaN}'}, "not valid JSON"),
        ({"architecture": "../../etc"}, "registry name"),
        ({"architecture": ""}, "registry name"),
        ({"bogus": "1"}, "unknown form field"),
    ],
)
def test_bad_model_fields_are_422(
    client: TestClient, team: Team, settings: Settings, fields: dict, needle: str
) -> None:
    r = upload_model(client, team, **fields)
    assert r.status_code == 422, r.text
    unknown = fields.get("architecture") == "../../etc"  # the worker's code too
    code = "unknown_architecture" if unknown else "invalid_input"
    assert r.json()["code"] == code and needle in r.json()["message"]
    assert _files_under(settings.storage_dir) == set()


def test_raw_pickle_is_refused_at_once_and_never_run(
    client: TestClient, team: Team, settings: Settings, tmp_path: Path, sent: list
) -> None:
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    r = upload_model(client, team, pickle.dumps(Payload(), protocol=2))
    assert r.status_code == 422
    assert r.json()["code"] == "unsafe_file"
    assert "state dict" in r.json()["message"] and "safetensors" in r.json()["message"]
    assert not marker.exists()
    assert _files_under(settings.storage_dir) == set()
    assert sent == []


@pytest.mark.parametrize(
    ("names", "code"),
    [
        (
            ["m/constants.pkl", "m/code/m.py", "m/data.pkl"],
            "unsafe_file",
        ),  # TorchScript
        (["m/archive_format", "m/models/m.json"], "unsafe_file"),  # torch.export
        (["readme.txt"], "invalid_input"),
    ],
)
def test_code_archives_are_refused_at_once(
    client: TestClient, team: Team, names: list[str], code: str
) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name in names:
            zf.writestr(name, b"x")
    r = upload_model(client, team, buf.getvalue())
    assert r.status_code == 422 and r.json()["code"] == code


def test_empty_and_missing_files_are_422(client: TestClient, team: Team) -> None:
    r = client.post(
        "/v1/models",
        headers=team.headers(),
        files={"file": ("m.safetensors", b"")},
        data={"architecture": "mlp"},
    )
    assert r.status_code == 422 and "empty" in r.json()["message"]
    r = client.post("/v1/models", headers=team.headers(), data={"architecture": "mlp"})
    assert r.status_code == 422 and "no field named file" in r.json()["message"]
    r = client.post("/v1/models", headers=team.headers(), json={"architecture": "mlp"})
    assert r.status_code == 422 and "multipart" in r.json()["message"]


@pytest.mark.parametrize(
    "filename",
    [
        "../x",
        "../../../../tmp/evil",
        "%2e%2e%2fevil",
        "/etc/passwd",
        "..\\..\\win",
        "a/../../b",
        "..",
    ],
)
def test_path_like_filenames_never_leave_the_storage_dir(
    client: TestClient,
    team: Team,
    settings: Settings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    filename: str,
) -> None:
    work = tmp_path / "cwd" / "a" / "b"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    before = _files_under(tmp_path)
    content = safetensors_bytes(n=3)
    r = client.post(
        "/v1/models",
        headers=team.headers(),
        files={"file": (filename, content)},
        data={"architecture": "mlp"},
    )
    assert r.status_code == 201, r.text
    created = _files_under(tmp_path) - before
    storage = settings.storage_dir.resolve()
    assert created == {object_path(storage, r.json()["sha256"])}
    assert all(p.resolve().is_relative_to(storage) for p in created)
    shown = r.json()["filename"]
    assert shown is None or ("/" not in shown and "\\" not in shown and shown != "..")


def test_dataset_file_and_builtin_spec(
    client: TestClient, engine: Engine, team: Team, settings: Settings, sent: list
) -> None:
    csv = b"a,b,label\n1,2,0\n3,4,1\n"
    r = client.post(
        "/v1/datasets", headers=team.headers(), files={"file": ("d.csv", csv)}
    )
    assert r.status_code == 201, r.text
    ds = r.json()
    assert (
        ds["format"] == "csv"
        and ds["has_labels"] is None
        and ds["status"] == "validating"
    )
    assert object_path(settings.storage_dir, ds["sha256"]).read_bytes() == csv
    r = client.post(
        "/v1/datasets",
        headers=team.headers(),
        data={"spec": "synthetic:sphere?d=2&D=16&n=500&noise=0.01"},
    )
    assert r.status_code == 201, r.text
    builtin = r.json()
    assert builtin["format"] == "builtin" and builtin["sha256"] is None
    assert [c["args"] for c in sent] == [
        ["dataset", ds["id"]],
        ["dataset", builtin["id"]],
    ]
    with session_scope(engine) as s:
        job = store.get_upload_for_validation(s, "dataset", builtin["id"])
    assert job is not None and job.path is None and job.spec.startswith("synthetic:")
    with session_scope(engine) as s:
        store.mark_upload(
            s,
            "dataset",
            builtin["id"],
            status="ready",
            info={
                "n_samples": 500,
                "sample_shape": [16],
                "dtype": "float32",
                "has_labels": False,
                "sha256": "cd" * 32,
                "intrinsic_dimension": 2,
            },
        )
    got = client.get(
        f"/v1/datasets/{builtin['id']}", headers=team.headers("read")
    ).json()
    assert (got["n_samples"], got["sample_shape"], got["dtype"], got["has_labels"]) == (
        500,
        [16],
        "float32",
        False,
    )
    assert got["status"] == "ready" and got["sha256"] == "cd" * 32


@pytest.mark.parametrize(
    "spec",
    [
        "/etc/passwd",
        "../data.npz",
        "data.npz",
        "sklearn:",
        "synthetic:sphere?d=2;rm -rf",
        "http://x/y.csv",
        "SKLEARN:digits",
        "synthetic:sphere?d",
    ],
)
def test_unknown_dataset_spec_forms_are_422(
    client: TestClient, team: Team, spec: str
) -> None:
    r = client.post("/v1/datasets", headers=team.headers(), data={"spec": spec})
    assert r.status_code == 422, r.text
    assert "sklearn:digits" in r.json()["message"]


def test_dataset_pickle_and_both_inputs_are_422(client: TestClient, team: Team) -> None:
    r = client.post(
        "/v1/datasets",
        headers=team.headers(),
        files={"file": ("d.npy", pickle.dumps([1, 2], protocol=4))},
    )
    assert r.status_code == 422 and r.json()["code"] == "unsafe_file"
    r = client.post(
        "/v1/datasets",
        headers=team.headers(),
        files={"file": ("d.csv", b"a\n1\n")},
        data={"spec": "sklearn:digits"},
    )
    assert r.status_code == 422 and "not both" in r.json()["message"]


def test_delete_removes_the_file_only_when_unreferenced(
    client: TestClient, team: Team, settings: Settings
) -> None:
    first = upload_model(client, team).json()
    second = upload_model(client, team).json()  # same bytes, same file
    path = object_path(settings.storage_dir, first["sha256"])
    admin = team.headers("admin")
    assert client.delete(f"/v1/models/{first['id']}", headers=admin).status_code == 204
    assert path.exists()
    assert client.delete(f"/v1/models/{second['id']}", headers=admin).status_code == 204
    assert not path.exists()
    r = client.get(f"/v1/models/{first['id']}", headers=admin)
    assert r.status_code == 404 and r.json()["code"] == "not_found"


def test_model_list_is_paginated_with_total(client: TestClient, team: Team) -> None:
    ids = [
        upload_model(client, team, safetensors_bytes(n=i + 1)).json()["id"]
        for i in range(5)
    ]
    page = client.get(
        "/v1/models?limit=2&offset=1", headers=team.headers("read")
    ).json()
    assert page["count"] == 5
    assert [m["id"] for m in page["data"]] == ids[::-1][1:3]
    r = client.get("/v1/models?limit=0", headers=team.headers("read"))
    assert r.status_code == 422 and r.json()["code"] == "invalid_input"


def _deflated_zeros_npz(n_bytes: int) -> bytes:
    """An .npz whose ``x.npy`` is ``n_bytes`` zeros (header included), deflated;
    built without numpy, in 1 MiB steps."""
    buf = io.BytesIO()
    with (
        zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf,
        zf.open("x.npy", "w", force_zip64=True) as f,
    ):
        header = b"{'descr': '<f4', 'fortran_order': False, 'shape': (%d,), }" % (
            (n_bytes - 128) // 4
        )
        header = header.ljust(117) + b"\n"
        f.write(b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header)
        for _ in range((n_bytes - 128) // 2**20):
            f.write(bytes(2**20))
    return buf.getvalue()


def _upload_dataset(client: TestClient, team: Team, content: bytes) -> Any:
    return client.post(
        "/v1/datasets", headers=team.headers(), files={"file": ("d.npz", content)}
    )


def test_zip_bomb_dataset_is_refused_at_once(
    client: TestClient, team: Team, settings: Settings, sent: list
) -> None:
    bomb = _deflated_zeros_npz(32 * 2**20 + 128)  # 32 MiB of zeros
    assert len(bomb) < settings.max_upload_bytes
    r = _upload_dataset(client, team, bomb)
    assert r.status_code == 422, r.text
    assert r.json()["code"] == "invalid_input"
    assert "inflates" in r.json()["message"] and "savez" in r.json()["message"]
    assert sent == [] and _files_under(settings.storage_dir) == set()
    # Under a ratio cap it lets through, the unpacked total is over the cap: 413.
    storage = client.app.state.storage  # type: ignore[attr-defined]
    storage.max_compression_ratio = 10**6
    storage.max_archive_bytes = 2**20
    r = _upload_dataset(client, team, bomb)
    assert r.status_code == 413 and r.json()["code"] == "too_large"
    assert "unpacks to" in r.json()["message"]
    assert sent == [] and _files_under(settings.storage_dir) == set()


def test_declared_huge_array_is_413_at_once(
    client: TestClient, team: Team, settings: Settings, sent: list
) -> None:
    header = b"{'descr': '<f4', 'fortran_order': False, 'shape': (1000000, 1000000), }"
    header = header.ljust(117) + b"\n"
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr(
            "x.npy", b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header
        )
    r = _upload_dataset(client, team, buf.getvalue())
    assert r.status_code == 413, r.text
    assert "declares 1000000000000 elements" in r.json()["message"]
    assert sent == []


def test_npz_of_other_arrays_is_422(client: TestClient, team: Team) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("labels.npy", b"")
    r = _upload_dataset(client, team, buf.getvalue())
    assert r.status_code == 422 and "arrays x and y" in r.json()["message"]
