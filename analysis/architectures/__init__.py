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

import warnings
from collections.abc import Callable
from importlib import metadata
from typing import Any, TypeVar

from torch import nn

from analysis.errors import InvalidInputError, UnknownArchitectureError, from_contract
from contract import architectures as contract_architectures
from contract.errors import ContractError

__all__ = [
    "ENTRY_POINT_GROUP",
    "available_architectures",
    "build_model",
    "parse_config",
    "register_architecture",
]

ENTRY_POINT_GROUP = contract_architectures.ENTRY_POINT_GROUP

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


def parse_config(arch: str, cls: type[_C], config: dict[str, Any]) -> _C:
    """Turn a user config dict into the built-in's config dataclass ``cls``,
    strictly (``contract.architectures.parse_config``): every problem is listed."""
    try:
        return contract_architectures.parse_config(arch, cls, config)
    except ContractError as exc:
        raise from_contract(exc) from exc


# The built-ins register themselves on import; they need the names above.
from analysis.architectures import (  # noqa: E402, F401
    autoencoder,
    mlp,
    resnet,
    unet,
    vae,
    vit,
)
