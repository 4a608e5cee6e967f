"""``bottlelens quickstart``: the REST API end to end on this machine, in a minute.

Starts ``bottlelens serve --embedded`` in the background, creates an API key, trains
the bundled demo model, uploads it and names ``sklearn:digits`` over HTTP, submits an
analysis, follows its progress, prints the per-layer table from ``GET .../results``,
saves the HTML report from ``GET .../report``, prints the URLs to look at (with a
``curl`` line that carries the key) while the service still runs, then stops it
(or, with ``--keep-running``, serves until Ctrl-C).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console

from workers.embedded import DEFAULT_TEAM, EMBEDDED_DIR, die_with_parent

DEMO_SEED = 0
QUICKSTART_METRICS = ("id", "mi", "probe", "cka", "attribution")


class QuickstartError(RuntimeError):
    """A step failed; the message says which and where the service's log is."""


def run_quickstart(
    *,
    port: int,
    samples: int,
    console: Console,
    timeout_s: float = 600.0,
    keep_running: bool = False,
) -> dict[str, Any]:
    """Run the walk-through; returns the result document it fetched.

    The URLs are printed while the service runs; with ``keep_running`` it serves
    until Ctrl-C, else it stops once they are printed.
    """
    from analysis.demo import train_demo_model
    from analysis.report import result_tables

    root = EMBEDDED_DIR.resolve()
    root.mkdir(parents=True, exist_ok=True)
    base = f"http://127.0.0.1:{port}"
    with _service(root, port, console) as log_path:
        token = _create_key(root)
        console.print(f"API key (read, submit) for team {DEFAULT_TEAM}: {token}")
        with httpx.Client(
            base_url=base,
            headers={"Authorization": f"Bearer {token}"},
            timeout=60,
        ) as http:
            api = _Api(http, log_path)
            console.print("training the demo model (MLP 64-128-64-8-64-10, digits)")
            demo = train_demo_model(root / "demo", seed=DEMO_SEED)
            model = api.upload_model(demo.weights, demo.architecture, demo.config)
            dataset = api.post("/v1/datasets", data={"spec": demo.dataset})
            console.print(f"uploaded model {model['id']} and dataset {dataset['id']}")
            api.wait_ready("models", model["id"], timeout_s)
            api.wait_ready("datasets", dataset["id"], timeout_s)
            analysis = api.post(
                "/v1/analyses",
                json={
                    "model_id": model["id"],
                    "dataset_id": dataset["id"],
                    "config": {
                        "samples": samples,
                        "seed": DEMO_SEED,
                        "metrics": list(QUICKSTART_METRICS),
                    },
                },
            )
            done = api.follow(analysis["id"], console, timeout_s)
            if done["status"] != "succeeded":
                error = done.get("error") or {}
                raise QuickstartError(
                    f"the analysis {done['status']}: {error.get('message')} "
                    f"(service log: {log_path})"
                )
            result = api.get(f"/v1/analyses/{analysis['id']}/results")
            for shown in result_tables(result, title="per-layer intrinsic dimension"):
                console.print(shown)
            report = api.save(f"/v1/analyses/{analysis['id']}/report", root)
            console.print(f"\nHTML report: {report}", highlight=False, soft_wrap=True)
            _print_urls(console, base, analysis["id"], token, result)
            if keep_running:
                console.print("serving until Ctrl-C", highlight=False)
                _wait_for_interrupt()
    return result


def _print_urls(
    console: Console, base: str, analysis_id: str, token: str, result: dict[str, Any]
) -> None:
    url = f"{base}/v1/analyses/{analysis_id}"
    pngs = [
        f"  {url}/artifacts/{png}  attribution maps at {entry['layer']}"
        for entry in result.get("attribution") or []
        for png in entry["files"]["png"]
    ]
    console.print(
        "\nThe service answers now (every /v1 URL but the docs wants the key):\n"
        f"  {base}/v1/docs  the API, to try out (Authorize: the key above)\n"
        f"  {url}  status and progress\n"
        f"  {url}/report  the HTML report\n"
        f"  {url}/results  the whole result\n"
        f"  {url}/layers  per-layer rows\n" + "\n".join(pngs) + "\nfrom a shell:\n"
        f'  curl -H "Authorization: Bearer {token}" {url}/report -o report.html',
        highlight=False,
        soft_wrap=True,
    )


def _wait_for_interrupt() -> None:
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass


class _Api:
    """The few calls the walk-through makes; a failed call says what came back."""

    def __init__(self, http: httpx.Client, log_path: Path) -> None:
        self.http, self.log_path = http, log_path

    def _check(self, response: httpx.Response) -> dict[str, Any]:
        if response.is_success:
            return response.json()
        raise QuickstartError(
            f"{response.request.method} {response.request.url.path} answered "
            f"{response.status_code}: {response.text[:500]} (service log: "
            f"{self.log_path})"
        )

    def get(self, path: str) -> dict[str, Any]:
        return self._check(self.http.get(path))

    def post(self, path: str, **kwargs: Any) -> dict[str, Any]:
        return self._check(self.http.post(path, **kwargs))

    def save(self, path: str, folder: Path) -> Path:
        """The body of ``GET path`` in ``folder``, named as the path's last part."""
        response = self.http.get(path)
        if not response.is_success:
            self._check(response)
        target = folder / f"quickstart-{path.rsplit('/', 1)[-1]}.html"
        target.write_bytes(response.content)
        return target

    def upload_model(
        self, weights: Path, architecture: str, config: dict[str, Any]
    ) -> dict[str, Any]:
        with weights.open("rb") as f:
            return self.post(
                "/v1/models",
                files={"file": (weights.name, f, "application/octet-stream")},
                data={
                    "architecture": architecture,
                    "architecture_config": json.dumps(config),
                },
            )

    def wait_ready(self, kind: str, object_id: str, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            obj = self.get(f"/v1/{kind}/{object_id}")
            if obj["status"] == "ready":
                return
            if obj["status"] == "rejected":
                raise QuickstartError(f"the {kind[:-1]} was rejected: {obj['error']}")
            time.sleep(0.3)
        raise QuickstartError(f"the {kind[:-1]} was not validated in {timeout_s} s")

    def follow(
        self, analysis_id: str, console: Console, timeout_s: float
    ) -> dict[str, Any]:
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        deadline = time.monotonic() + timeout_s
        if not console.is_terminal:  # a log or a pipe: a line per stage
            from workers.progress import FractionLines

            lines = FractionLines(lambda line: console.print(line, highlight=False))
            while time.monotonic() < deadline:
                obj = self.get(f"/v1/analyses/{analysis_id}")
                lines(obj["stage"] or obj["status"], obj["progress"])
                if obj["status"] in ("succeeded", "failed", "cancelled"):
                    return obj
                time.sleep(0.3)
            raise QuickstartError(f"the analysis did not finish in {timeout_s} s")
        with Progress(
            TextColumn("analysis {task.description:<10}"),
            BarColumn(),
            TextColumn("{task.percentage:>3.0f}%"),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        ) as bar:
            task = bar.add_task("queued", total=1.0)
            while time.monotonic() < deadline:
                obj = self.get(f"/v1/analyses/{analysis_id}")
                stage = obj["stage"] or obj["status"]
                bar.update(task, completed=obj["progress"], description=stage)
                if obj["status"] in ("succeeded", "failed", "cancelled"):
                    return obj
                time.sleep(0.3)
        raise QuickstartError(f"the analysis did not finish in {timeout_s} s")


def _create_key(root: Path) -> str:
    from service import store
    from service.db import session_scope
    from workers.embedded import configure

    configure(root)
    with session_scope() as session:
        _, token = store.create_api_key(session, DEFAULT_TEAM, "read,submit")
    return token


@contextmanager
def _service(root: Path, port: int, console: Console) -> Iterator[Path]:
    """``bottlelens serve --embedded`` in the background until the block ends."""
    _port_free(port)
    log_path = root / "quickstart.log"
    console.print(f"starting the embedded service on port {port} (log: {log_path})")
    with log_path.open("wb") as log:
        proc = subprocess.Popen(  # noqa: S603 - our own interpreter and arguments
            [
                sys.executable,
                "-m",
                "workers.cli",
                "serve",
                "--embedded",
                "--port",
                f"{port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent,  # a killed quickstart stops the service
        )
    try:
        _wait_healthy(proc, f"http://127.0.0.1:{port}", log_path)
        yield log_path
    finally:
        console.print("stopping the service")
        _stop(proc)


def _port_free(port: int) -> None:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError as exc:
            raise QuickstartError(
                f"port {port} is in use ({exc.strerror}); pass --port with a free one"
            ) from exc


def _wait_healthy(proc: subprocess.Popen[bytes], base: str, log_path: Path) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log_path.read_text(errors="replace")[-2000:]
            raise QuickstartError(f"the service exited ({proc.returncode}):\n{tail}")
        try:
            if httpx.get(f"{base}/v1/health", timeout=2).is_success:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    raise QuickstartError(f"the service did not answer in 120 s (log: {log_path})")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM lets ``serve`` stop its worker; SIGKILL only if it hangs."""
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
