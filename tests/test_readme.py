"""Every snippet of the README works as written.

Python blocks are executed (in a temporary folder), except the few listed in
``NOT_RUN`` with the test that covers them or why they cannot run here. Every
``bottlelens ...`` command of a shell block names a command that exists, with
options it takes; the cheap ones are run. The table of architecture keys equals
the contract's.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import shlex
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from contract.architectures import BUILTIN_CONFIGS, config_keys
from workers.cli import app

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```(\w+)\n(.*?)```", README.read_text(), flags=re.S)
# First line of a Python block -> where it is run instead, or why it cannot be.
NOT_RUN = {
    "import torchvision": "tests/analysis/test_architectures.py runs it with a "
    "stand-in torchvision (not a dependency)",
    "from bottlelens import ApiError, Client": "needs a running service holding "
    "model.safetensors; tests/client/ run every call it makes",
}
# A fragment that reads names its text defines elsewhere: those names, and the name
# that must be true after it ran. The webhook check gets a body signed as the
# scheduler signs it.
_SECRET, _BODY = b"webhook secret", b'{"audit": "a1"}'
_SIGNATURE = "sha256=" + hmac.new(_SECRET, _BODY, hashlib.sha256).hexdigest()
GIVEN = {
    "import hashlib, hmac": (
        {
            "secret": _SECRET,
            "body": _BODY,
            "request": SimpleNamespace(headers={"X-Bottlelens-Signature": _SIGNATURE}),
        },
        "ok",
    ),
}
RUN = {"architectures", "--help"}  # commands run whole: fast, no files needed


def _python_blocks() -> list[str]:
    return [body for lang, body in BLOCKS if lang == "python"]


def _commands() -> list[list[str]]:
    """Every ``bottlelens`` command of the shell blocks, as argv after the name."""
    found = []
    for lang, body in BLOCKS:
        if lang not in ("bash", "sh", "shell"):
            continue
        for line in body.replace("\\\n", " ").splitlines():
            if "bottlelens " not in line:
                continue
            lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
            lexer.commenters = "#"
            lexer.wordchars += "$=*{}[]:,@/.~-"
            words: list[str] = []
            for token in [*lexer, ";"]:
                if token and set(token) <= set(";&|()"):
                    if words and words[0] == "bottlelens":
                        found.append(words[1:])
                    words = []
                else:
                    words.append(token)
    return found


def test_the_python_blocks_are_the_ones_known() -> None:
    firsts = [body.splitlines()[0] for body in _python_blocks()]
    assert set(NOT_RUN) <= set(firsts)  # a renamed block is noticed


@pytest.mark.slow
@pytest.mark.parametrize(
    "code",
    [b for b in _python_blocks() if b.splitlines()[0] not in NOT_RUN],
    ids=lambda b: b.splitlines()[0][:40],
)
def test_python_block_runs(code: str, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    names, must_hold = GIVEN.get(code.splitlines()[0], ({}, None))
    namespace = {"__name__": "__readme__", **names}
    exec(compile(code, "README.md", "exec"), namespace)
    if must_hold:
        assert namespace[must_hold]


def _resolve(argv: list[str]) -> tuple[Any, list[str]]:
    """The click command an argv names, and the rest of the argv."""
    command: Any = typer.main.get_command(app)
    rest = list(argv)
    while hasattr(command, "commands") and rest and not rest[0].startswith("-"):
        sub = command.commands.get(rest[0])
        assert sub is not None, f"bottlelens {' '.join(argv)}: no command {rest[0]!r}"
        command, rest = sub, rest[1:]
    return command, rest


def test_every_documented_command_exists_with_its_options() -> None:
    commands = _commands()
    assert len(commands) >= 20
    for argv in commands:
        command, rest = _resolve(argv)
        assert not hasattr(command, "commands"), f"bottlelens {' '.join(argv)}"
        known = {opt for p in command.params for opt in [*p.opts, *p.secondary_opts]}
        used = {w.split("=", 1)[0] for w in rest if w.startswith("-")}
        assert used <= known | {"--help"}, (
            f"bottlelens {' '.join(argv)}: {used - known}"
        )


def test_the_documented_service_commands_answer_help() -> None:
    runner = CliRunner()
    seen = set()
    for argv in _commands():
        _, rest = _resolve(argv)
        path = argv[: len(argv) - len(rest)]
        if tuple(path) in seen:
            continue
        seen.add(tuple(path))
        run_whole = bool(RUN & {*path, *rest})
        result = runner.invoke(app, argv if run_whole else [*path, "--help"])
        assert result.exit_code == 0, (argv, result.output)


def test_the_architecture_table_is_the_contracts() -> None:
    text = README.read_text().split("| `--arch` | keys |\n|---|---|\n", 1)[1]
    rows = dict(re.findall(r"^\| `(\w+)` \| (.*) \|$", text.split("\n\n", 1)[0], re.M))
    assert list(rows) == list(BUILTIN_CONFIGS)
    for name, cell in rows.items():
        expected = ", ".join(
            f"`{key}` {kind.replace('|', 'or')} = "
            f"{json.dumps(list(d) if isinstance(d, tuple) else d)}"
            for key, (kind, d) in config_keys(name).items()
        )
        assert cell == expected, name
