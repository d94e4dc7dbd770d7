"""Pretrained models shipped inside the package (no download at run time).

Each model is ``<name>.pt`` (the model-file contract of ``napari_microseg.io.models``)
with a model card ``<name>.md`` (training data, preset, epochs, held-out metrics),
trained by ``scripts/train_pretrained.py`` with the project's own trainer.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import InputError

PRETRAINED_DIR = Path(__file__).parent


def list_pretrained() -> list[str]:
    """Names of the shipped models (file stems), sorted."""
    return sorted(p.stem for p in PRETRAINED_DIR.glob("*.pt"))


def pretrained_task(name: str) -> str | None:
    """What a shipped model classifies (``"images"``, ``"objects"``, ``"profiles"``), from its
    card ``<name>.json``; None for segmentation models (and models without a card)."""
    import json

    card = PRETRAINED_DIR / f"{name}.json"
    try:
        config = json.loads(card.read_text()).get("config") or {}
    except (OSError, ValueError):
        return None
    return config.get("task") if isinstance(config, dict) else None


def list_pretrained_for(task: str | None) -> list[str]:
    """Shipped models of one kind: ``None`` = segmentation models, else classifiers of ``task``."""
    return [name for name in list_pretrained() if pretrained_task(name) == task]


def pretrained_path(name: str) -> Path:
    """Path of a shipped model by name; InputError naming the available ones otherwise."""
    path = PRETRAINED_DIR / f"{name}.pt"
    if not path.is_file():
        raise InputError(f"no shipped model {name!r}; available: {', '.join(list_pretrained()) or 'none'}")
    return path


def model_digest(spec: str) -> str:
    """``sha256:<hex>`` of the model file ``spec`` names (a path or a shipped model's name), for run records:
    a model fine-tuned in place keeps its name."""
    from ..batch.manifest import sha256_file

    return sha256_file(resolve_model(str(spec)))


def resolve_model(spec: str) -> Path:
    """A model file path, or the name of a shipped model."""
    path = Path(spec)
    if path.is_file():
        return path
    if path.suffix == "" and (PRETRAINED_DIR / f"{spec}.pt").is_file():
        return PRETRAINED_DIR / f"{spec}.pt"
    raise InputError(f"model {spec!r} is neither a file nor a shipped model ({', '.join(list_pretrained()) or 'none shipped'})")
