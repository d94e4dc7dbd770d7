"""napari reader hook: TIFF, FITS (incl. .gz) and Zarr / OME-Zarr (lazy)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from .io.images import image_kind, read_image


def get_reader(path: str | list[str]) -> Callable[[Any], list] | None:
    """Return a reader function for ``path`` if its type is ours, else None."""
    if isinstance(path, list):
        if not path:
            return None
        path = path[0]
    if image_kind(path) is None:
        return None
    return read_layers


def read_layers(path: str | list[str]) -> list[tuple]:
    """Read one or several files into napari layer data tuples ``(data, kwargs, "image")``.

    FITS data stay in their raw units (ADC); the header is kept in ``metadata``.
    Errors surface as one-line :class:`InputError` messages naming the file.
    """
    paths = path if isinstance(path, list) else [path]
    layers = []
    for p in paths:
        image = read_image(p, channel="all")
        name = Path(str(p).rstrip("/")).name
        for suffix in (".gz", ".zarr", ".tiff", ".tif", ".fits", ".fit", ".fts", ".ome"):
            name = name.removesuffix(suffix)
        kwargs: dict = {"name": name, "metadata": {"source_kind": image.kind, "header": image.metadata}}
        if "channel_axis" in image.metadata:  # one layer per channel, named after the file
            kwargs["channel_axis"] = image.metadata["channel_axis"]
            kwargs["name"] = [f"{name} [channel {c}]" for c in range(image.data.shape[kwargs["channel_axis"]])]
        layers.append((image.data, kwargs, "image"))
    return layers
