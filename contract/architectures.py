"""Architecture names and the built-ins' config schemas.

A model is built by name, never by importing a user string. The built-ins' configs
are frozen dataclasses checked strictly here (unknown key, wrong type, out of range),
so the API refuses a bad config before anything is queued; the analysis library
builds the modules from them. Plugin architectures are installed packages that name a
callable in the entry-point group ``bottlelens.architectures``; their names are read
from the entry points' metadata, without importing them, and a plugin checks its own
config when it is built.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass
from importlib import metadata
from typing import Any, Literal, TypeVar

from contract.errors import ContractError
from contract.types import integral

ENTRY_POINT_GROUP = "bottlelens.architectures"

_C = TypeVar("_C")


def check(arch: str, key: str, ok: bool, requirement: str, value: Any) -> None:
    """Raise ``ContractError`` naming ``key`` unless ``ok``."""
    if not ok:
        raise ContractError(
            f"{arch} config key {key!r} must be {requirement}, got {value!r}"
        )


@dataclass(frozen=True)
class MLPConfig:
    in_features: int = 64
    widths: tuple[int, ...] = (256, 16, 256)
    out_features: int = 10
    activation: Literal["relu", "tanh", "gelu"] = "relu"

    def __post_init__(self) -> None:
        check("mlp", "in_features", self.in_features > 0, "> 0", self.in_features)
        check("mlp", "out_features", self.out_features > 0, "> 0", self.out_features)
        check(
            "mlp",
            "widths",
            all(w > 0 for w in self.widths),
            "a list of positive ints",
            list(self.widths),
        )


@dataclass(frozen=True)
class ConvAutoencoderConfig:
    in_channels: int = 1
    image_size: int = 32
    channels: tuple[int, ...] = (16, 32)
    latent_dim: int = 8

    def __post_init__(self) -> None:
        arch = "conv_autoencoder"
        check(arch, "in_channels", self.in_channels > 0, "> 0", self.in_channels)
        check(arch, "latent_dim", self.latent_dim > 0, "> 0", self.latent_dim)
        check(
            arch,
            "channels",
            len(self.channels) > 0 and all(c > 0 for c in self.channels),
            "a non-empty list of positive ints",
            list(self.channels),
        )
        steps = 2 ** len(self.channels)
        check(
            arch,
            "image_size",
            self.image_size > 0 and self.image_size % steps == 0,
            f"a positive multiple of 2**len(channels) = {steps} (each conv halves it)",
            self.image_size,
        )


@dataclass(frozen=True)
class ResNetConfig:
    in_channels: int = 3
    num_classes: int = 1000
    layers: tuple[int, ...] = (3, 4, 6, 3)
    widths: tuple[int, ...] = (64, 128, 256, 512)
    stem_width: int = 64
    small_input: bool = False

    def __post_init__(self) -> None:
        for key in ("in_channels", "num_classes", "stem_width"):
            value = getattr(self, key)
            check("resnet", key, value > 0, "> 0", value)
        check(
            "resnet",
            "layers",
            len(self.layers) > 0 and all(n > 0 for n in self.layers),
            "a non-empty list of positive ints",
            list(self.layers),
        )
        check(
            "resnet",
            "widths",
            len(self.widths) == len(self.layers) and all(w > 0 for w in self.widths),
            f"a list of {len(self.layers)} positive ints (one per stage in 'layers')",
            list(self.widths),
        )


@dataclass(frozen=True)
class UNetConfig:
    in_channels: int = 1
    out_channels: int = 1
    base_channels: int = 16
    depth: int = 3

    def __post_init__(self) -> None:
        for key in ("in_channels", "out_channels", "base_channels"):
            value = getattr(self, key)
            check("unet", key, value > 0, "> 0", value)
        check("unet", "depth", 1 <= self.depth <= 8, "between 1 and 8", self.depth)


@dataclass(frozen=True)
class VAEConfig:
    kind: Literal["mlp", "conv"] = "mlp"
    in_channels: int = 1
    image_size: int = 8
    hidden: tuple[int, ...] = (128,)
    latent_dim: int = 8

    def __post_init__(self) -> None:
        for key in ("in_channels", "image_size", "latent_dim"):
            value = getattr(self, key)
            check("vae", key, value > 0, "> 0", value)
        check(
            "vae",
            "hidden",
            len(self.hidden) > 0 and all(h > 0 for h in self.hidden),
            "a non-empty list of positive ints",
            list(self.hidden),
        )
        if self.kind == "conv":
            steps = 2 ** len(self.hidden)
            check(
                "vae",
                "image_size",
                self.image_size % steps == 0,
                f"a multiple of 2**len(hidden) = {steps} for kind 'conv' (each "
                "conv halves it)",
                self.image_size,
            )


@dataclass(frozen=True)
class ViTConfig:
    in_channels: int = 3
    image_size: int = 32
    patch_size: int = 8
    num_layers: int = 4
    hidden_dim: int = 64
    mlp_dim: int = 256
    num_heads: int = 4
    num_classes: int = 10

    def __post_init__(self) -> None:
        for key in (
            "in_channels",
            "patch_size",
            "num_layers",
            "mlp_dim",
            "num_heads",
            "num_classes",
        ):
            value = getattr(self, key)
            check("vit", key, value > 0, "> 0", value)
        check(
            "vit",
            "image_size",
            self.image_size > 0 and self.image_size % self.patch_size == 0,
            f"a positive multiple of patch_size = {self.patch_size}",
            self.image_size,
        )
        check(
            "vit",
            "hidden_dim",
            self.hidden_dim > 0 and self.hidden_dim % self.num_heads == 0,
            f"a positive multiple of num_heads = {self.num_heads}",
            self.hidden_dim,
        )


BUILTIN_CONFIGS: dict[str, type] = {
    "mlp": MLPConfig,
    "conv_autoencoder": ConvAutoencoderConfig,
    "resnet": ResNetConfig,
    "unet": UNetConfig,
    "vae": VAEConfig,
    "vit": ViTConfig,
}


def plugin_names() -> list[str]:
    """Names of installed plugin architectures, from entry-point metadata only (no
    plugin code is imported); names that would shadow a built-in are left out."""
    eps = metadata.entry_points(group=ENTRY_POINT_GROUP)
    return sorted({ep.name for ep in eps} - set(BUILTIN_CONFIGS))


def architecture_names() -> list[str]:
    """Every name a model may be built by: built-ins and plugins, sorted."""
    return sorted({*BUILTIN_CONFIGS, *plugin_names()})


def config_keys(name: str) -> dict[str, tuple[str, Any]]:
    """A built-in's config keys: ``{key: (type, default)}``."""
    cls = BUILTIN_CONFIGS[name]
    hints = typing.get_type_hints(cls)
    return {
        f.name: (_type_name(hints[f.name]), f.default) for f in dataclasses.fields(cls)
    }


def check_architecture(name: str, config: dict[str, Any] | None) -> Any:
    """Check a name and its config; returns the built-in's config object (``None``
    for a plugin, whose config is checked when it is built).

    Raises ``ContractError`` (code ``unknown_architecture`` for a name no built-in
    or installed plugin has; ``invalid_input`` for a bad config).
    """
    if config is not None and not isinstance(config, dict):
        raise ContractError(
            f"the config of {name!r} must be an object of settings, got "
            f"{type(config).__name__}"
        )
    if name in BUILTIN_CONFIGS:
        return parse_config(name, BUILTIN_CONFIGS[name], config or {})
    if name in plugin_names():
        return None
    raise ContractError(
        f"unknown architecture {name[:100]!r}: not a registry name; available: "
        f"{', '.join(architecture_names())}",
        code="unknown_architecture",
    )


def parse_config(arch: str, cls: type[_C], config: dict[str, Any]) -> _C:
    """Turn a user config dict into the dataclass ``cls``, strictly.

    Every key must be a field of ``cls`` and every value must match the field's
    annotation (``int`` refuses bools and floats; lists become tuples); every
    problem is listed. Range checks live in the dataclass's ``__post_init__``.
    """
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    hints = typing.get_type_hints(cls)
    accepted = ", ".join(fields)
    problems = [
        f"unknown {arch} config key {k!r}; accepted keys: {accepted}"
        for k in config
        if k not in fields
    ]
    values = {}
    for key, value in config.items():
        if key in fields:
            try:
                values[key] = _coerce(arch, key, value, hints[key])
            except ContractError as exc:
                problems.append(str(exc))
    try:  # the range checks of the values that are well typed, too
        built = cls(**values)
    except ContractError as exc:
        problems.append(str(exc))
    if problems:
        raise ContractError(
            f"invalid {arch} config (accepted keys: {accepted})", problems
        )
    return built


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
            except ContractError:
                pass
        ok = False
    elif tp is type(None):
        ok = value is None
    elif tp is int:
        value = integral(value)  # JSON's 3.0 is the integer 3
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif tp is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        value = float(value) if ok else value
    else:
        ok = isinstance(value, tp)
    if not ok:
        raise ContractError(
            f"{arch} config key {key!r} must be {_type_name(tp)}, got {value!r}"
        )
    return value
