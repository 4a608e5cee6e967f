"""Registry of model architectures: built-ins and third-party entry points.

A model is built by name, never by importing a user string::

    from analysis.architectures import build_model
    model = build_model("mlp", {"in_features": 64, "widths": [128, 8, 128]})

Built-ins (``mlp``, ``conv_autoencoder``, ``resnet``, ``unet``) register themselves
with :func:`register_architecture`. Installed packages add architectures through the
entry-point group ``bottlelens.architectures``: the entry point's name is the
architecture name and it loads a callable ``config: dict -> nn.Module``. A plugin
cannot shadow a built-in name; such an entry point is skipped with a warning.

Built-in configs are validated strictly: an unknown key, a value of the wrong type
or out of range raises :class:`~analysis.errors.InvalidInputError` naming the key
and the accepted keys. A plugin validates its own config.
"""

from __future__ import annotations

import dataclasses
import types
import typing
import warnings
from collections.abc import Callable
from importlib import metadata
from typing import Any, TypeVar

from torch import nn

from analysis.errors import InvalidInputError, UnknownArchitectureError

__all__ = [
    "ENTRY_POINT_GROUP",
    "available_architectures",
    "build_model",
    "parse_config",
    "register_architecture",
]

ENTRY_POINT_GROUP = "bottlelens.architectures"

Builder = Callable[[dict[str, Any]], nn.Module]
_BUILTINS: dict[str, Builder] = {}

_B = TypeVar("_B", bound=Builder)
_C = TypeVar("_C")


def register_architecture(name: str) -> Callable[[_B], _B]:
    """Register a built-in builder ``config -> nn.Module`` under ``name``.

    For the architectures shipped with bottlelens; third-party code uses the
    ``bottlelens.architectures`` entry-point group instead.
    """

    def decorate(builder: _B) -> _B:
        if name in _BUILTINS:
            raise ValueError(f"architecture {name!r} is registered twice")
        _BUILTINS[name] = builder
        return builder

    return decorate


def _plugin_entry_points() -> dict[str, metadata.EntryPoint]:
    found: dict[str, metadata.EntryPoint] = {}
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in _BUILTINS:
            warnings.warn(
                f"entry point {ep.value!r} in group {ENTRY_POINT_GROUP!r} tries to "
                f"shadow the built-in architecture {ep.name!r}; it is ignored. "
                "Give the plugin architecture another name.",
                stacklevel=3,
            )
            continue
        if ep.name in found and found[ep.name].value != ep.value:
            warnings.warn(
                f"two entry points are named {ep.name!r} ({found[ep.name].value!r} "
                f"and {ep.value!r}); the first is used.",
                stacklevel=3,
            )
            continue
        found.setdefault(ep.name, ep)
    return found


def available_architectures() -> list[str]:
    """Names that :func:`build_model` accepts, built-ins and plugins, sorted."""
    return sorted({*_BUILTINS, *_plugin_entry_points()})


def build_model(name: str, config: dict[str, Any] | None = None) -> nn.Module:
    """Build the architecture ``name`` with ``config`` (``None`` for the defaults).

    Parameters
    ----------
    name:
        A registered name, see :func:`available_architectures`.
    config:
        Keyword settings of the architecture; each built-in lists its keys and
        defaults in its builder's docstring (``analysis.architectures.mlp`` ...).

    Returns
    -------
    A freshly initialised ``nn.Module`` in training mode.

    Raises
    ------
    UnknownArchitectureError
        ``name`` is not registered; the message lists the available names.
    InvalidInputError
        A config key is unknown, ill-typed or out of range; or a plugin failed.
    """
    if config is not None and not isinstance(config, dict):
        raise InvalidInputError(
            f"config for {name!r} must be a dict of settings, got "
            f"{type(config).__name__}"
        )
    config = dict(config or {})
    if name in _BUILTINS:
        return _BUILTINS[name](config)
    plugins = _plugin_entry_points()
    if name not in plugins:
        names = ", ".join(sorted({*_BUILTINS, *plugins}))
        raise UnknownArchitectureError(
            f"unknown architecture {name!r}; available: {names}"
        )
    ep = plugins[name]
    try:
        builder = ep.load()
    except Exception as e:
        raise InvalidInputError(
            f"the plugin architecture {name!r} ({ep.value}) failed to load: {e}"
        ) from e
    if not callable(builder):
        raise InvalidInputError(
            f"the plugin architecture {name!r} ({ep.value}) is not callable"
        )
    try:
        model = builder(config)
    except Exception as e:
        # The plugin's own failure, told in one line: which plugin, what went wrong.
        detail = str(e).strip().splitlines()
        raise InvalidInputError(
            f"the plugin architecture {name!r} ({ep.value}) failed to build the "
            f"model: {type(e).__name__}: {detail[0] if detail else 'no message'}"
        ) from e
    if not isinstance(model, nn.Module):
        raise InvalidInputError(
            f"the plugin architecture {name!r} ({ep.value}) returned "
            f"{type(model).__name__}, not an nn.Module"
        )
    return model


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is typing.Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if typing.get_origin(tp) is tuple:
        return f"list of {_type_name(typing.get_args(tp)[0])}"
    return getattr(tp, "__name__", str(tp))


def _coerce(arch: str, key: str, value: Any, tp: Any) -> Any:
    """Check ``value`` against the annotation ``tp``; lists become tuples."""
    origin = typing.get_origin(tp)
    ok: bool
    if origin is typing.Literal:
        ok = isinstance(value, str) and value in typing.get_args(tp)
    elif origin is tuple:
        (item,) = {a for a in typing.get_args(tp) if a is not Ellipsis}
        if isinstance(value, list | tuple):
            return tuple(_coerce(arch, key, v, item) for v in value)
        ok = False
    elif origin in (typing.Union, types.UnionType):
        for option in typing.get_args(tp):
            try:
                return _coerce(arch, key, value, option)
            except InvalidInputError:
                pass
        ok = False
    elif tp is type(None):
        ok = value is None
    elif tp is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif tp is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        value = float(value) if ok else value
    else:
        ok = isinstance(value, tp)
    if not ok:
        raise InvalidInputError(
            f"{arch} config key {key!r} must be {_type_name(tp)}, got {value!r}"
        )
    return value


def parse_config(arch: str, cls: type[_C], config: dict[str, Any]) -> _C:
    """Turn a user config dict into the dataclass ``cls``, strictly.

    Every key must be a field of ``cls`` and every value must match the field's
    annotation (``int`` refuses bools and floats; lists become tuples). Range
    checks live in the dataclass's ``__post_init__``.
    """
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    hints = typing.get_type_hints(cls)
    accepted = ", ".join(fields)
    unknown = [k for k in config if k not in fields]
    if unknown:
        raise InvalidInputError(
            f"unknown {arch} config key(s) {', '.join(map(repr, unknown))}; "
            f"accepted keys: {accepted}"
        )
    try:
        return cls(**{k: _coerce(arch, k, v, hints[k]) for k, v in config.items()})
    except InvalidInputError as e:
        raise InvalidInputError(f"{e} (accepted keys: {accepted})") from e


def check(arch: str, key: str, ok: bool, requirement: str, value: Any) -> None:
    """Raise ``InvalidInputError`` naming ``key`` unless ``ok``."""
    if not ok:
        raise InvalidInputError(
            f"{arch} config key {key!r} must be {requirement}, got {value!r}"
        )


# The built-ins register themselves on import; they need the names above.
from analysis.architectures import autoencoder, mlp, resnet, unet  # noqa: E402, F401
