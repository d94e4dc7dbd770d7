"""Networks: a configurable 2D U-Net and a name -> builder registry with presets."""

from .registry import (
    PRESETS,
    available_architectures,
    available_presets,
    build_model,
    n_outputs_for_mode,
    register_architecture,
    register_preset,
    resolve_model_config,
)
from .unet import UNet

__all__ = [
    "UNet",
    "PRESETS",
    "build_model",
    "resolve_model_config",
    "register_architecture",
    "register_preset",
    "available_architectures",
    "available_presets",
    "n_outputs_for_mode",
]
