"""Name -> builder registry for networks, with named presets.

A *model config* is a plain JSON-able dict::

    {"architecture": "unet", "preset": "small", "in_channels": 1, "n_classes": 1,
     "depth": 3, "base_filters": 16, ...}

``preset`` fills in defaults; explicit keys override them. The fully resolved
dict (see :func:`resolve_model_config`) is what the model file stores, so a
model can be rebuilt without knowing the preset table of the version that made it.

Other architectures (whole-image classifiers, 1D profile nets) register here
with :func:`register_architecture`.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable

from torch import nn

__all__ = [
    "PRESETS",
    "register_architecture",
    "register_preset",
    "available_architectures",
    "available_presets",
    "resolve_model_config",
    "build_model",
    "n_outputs_for_mode",
]

_ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {}

#: named presets; "n" and "c" follow METHODS.md [N] and [C]
PRESETS: dict[str, dict[str, Any]] = {
    # [N]: 64 filters first, 4 poolings, ReLU, batch norm, dropout 0.05, transposed-conv up
    "n": dict(architecture="unet", depth=4, base_filters=64, batch_norm=True, dropout=0.05,
              activation="relu", upsampling="transpose"),
    # [C]: 32-64-128-256-512, ELU, dropout 0.18, transposed-conv up (no batch norm in the study)
    "c": dict(architecture="unet", depth=4, base_filters=32, batch_norm=False, dropout=0.18,
              activation="elu", upsampling="transpose"),
    # fast CPU default: ~0.47 M parameters, trains on simulated nuclei in a minute or two on 2 cores
    "small": dict(architecture="unet", depth=3, base_filters=16, batch_norm=True, dropout=0.05,
                  activation="relu", upsampling="transpose"),
}


def register_architecture(name: str, builder: Callable[..., nn.Module]) -> None:
    """Register ``builder(**params) -> nn.Module`` under ``name`` (replaces an existing entry)."""
    _ARCHITECTURES[name.lower()] = builder


def register_preset(name: str, params: dict[str, Any]) -> None:
    """Register a preset: a dict holding ``architecture`` and its keyword arguments."""
    if "architecture" not in params:
        raise ValueError("a preset needs an 'architecture' key")
    PRESETS[name.lower()] = dict(params)


def available_architectures() -> list[str]:
    return sorted(_ARCHITECTURES)


def available_presets() -> list[str]:
    return sorted(PRESETS)


def n_outputs_for_mode(output_mode: str, n_classes: int | None = None) -> int:
    """Number of network output channels for an output mode.

    ``"binary"`` -> 1 (sigmoid), ``"three_class"`` -> 3 (background, interior, boundary),
    ``"multiclass"`` -> ``n_classes`` (>= 2, softmax).
    """
    if output_mode == "binary":
        return 1
    if output_mode == "three_class":
        return 3
    if output_mode == "multiclass":
        if n_classes is None or int(n_classes) < 2:
            raise ValueError("output mode 'multiclass' needs n_classes >= 2")
        return int(n_classes)
    raise ValueError(f"unknown output mode {output_mode!r}: use binary, three_class or multiclass")


def resolve_model_config(config: dict[str, Any]) -> dict[str, Any]:
    """Merge a preset with explicit keys; return a complete JSON-able model config.

    Unknown keys that the builder does not accept are dropped from the builder's
    arguments but kept in the returned dict only if they are ``preset`` /
    ``architecture``.
    """
    config = dict(config or {})
    preset = config.get("preset")
    merged: dict[str, Any] = {}
    if preset is not None:
        key = str(preset).lower()
        if key not in PRESETS:
            raise ValueError(f"unknown model preset {preset!r}: choose from {', '.join(available_presets())}")
        merged.update(PRESETS[key])
        merged["preset"] = key
    merged.update({k: v for k, v in config.items() if v is not None})
    merged.setdefault("architecture", "unet")
    arch = str(merged["architecture"]).lower()
    if arch not in _ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}: choose from {', '.join(available_architectures())}")
    merged["architecture"] = arch
    builder = _ARCHITECTURES[arch]
    accepted = _builder_params(builder)
    out = {"architecture": arch}
    if "preset" in merged:
        out["preset"] = merged["preset"]
    sig = inspect.signature(builder)
    for name in accepted:
        if name in merged:
            out[name] = merged[name]
        else:
            default = sig.parameters[name].default
            if default is not inspect.Parameter.empty:
                out[name] = default
    return out


def _builder_params(builder: Callable) -> list[str]:
    sig = inspect.signature(builder)
    return [n for n, p in sig.parameters.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and n != "self"]


def build_model(config: dict[str, Any]) -> nn.Module:
    """Build an untrained network from a model config (see module docstring).

    Examples
    --------
    >>> net = build_model({"preset": "small", "n_classes": 3})
    """
    resolved = resolve_model_config(config)
    builder = _ARCHITECTURES[resolved["architecture"]]
    kwargs = {k: v for k, v in resolved.items() if k not in ("architecture", "preset")}
    return builder(**kwargs)


def _register_builtin() -> None:
    from .unet import UNet

    register_architecture("unet", UNet)
    # the classifiers register themselves on import; importing them here lets load_model
    # rebuild any shipped architecture without the caller importing napari_microseg.classify
    from . import classifiers, profile  # noqa: F401


_register_builtin()
