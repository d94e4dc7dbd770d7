"""Tiled, blended inference over images of any size.

A network sees fixed-size tiles; predictions are stitched with a smooth
separable raised-cosine window so there are no seams. Work is done one row band
of tiles at a time: the band is read once from the source (numpy, zarr or dask:
only that band is ever loaded), its tiles are predicted in batches, the
weighted predictions are accumulated, and the rows no later band can touch are
normalised and written to ``out`` (numpy or zarr). Memory is therefore bounded
by ``n_out * (tile + overlap) * width`` floats, independent of the image height
and of the number of frames.

Images smaller than a tile are reflect-padded to the tile size, so every batch
the network sees has the same shape ``(B, 1, tile_y, tile_x)``.
"""

from __future__ import annotations

from typing import Any, Callable, Generator, Iterator, Sequence

import numpy as np

from ..errors import InputError
from ..progress import Progress

PredictFn = Callable[[np.ndarray], Any]
"""``predict_fn(batch)``: ``batch`` float32 ``(B, 1, h, w)`` -> ``(B, K, h, w)`` array-like."""

BandTransform = Callable[[np.ndarray, int], np.ndarray]
"""``transform(band, t)``: raw band ``(rows, W)`` of frame ``t`` -> float32 band, same shape."""


def _pair(value: int | float | Sequence) -> tuple:
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f"expected one value or a (y, x) pair, got {value!r}")
        return tuple(value)
    return (value, value)


def resolve_overlap(tile: int, overlap: int | float) -> int:
    """Overlap in pixels: ``overlap`` < 1 is a fraction of ``tile``, otherwise pixels.

    The result is clipped to ``[0, tile // 2]`` so that consecutive tiles always
    advance by at least half a tile.
    """
    if overlap < 0:
        raise ValueError(f"overlap must be >= 0, got {overlap}")
    px = int(round(overlap * tile)) if 0 < overlap < 1 else int(overlap)
    return max(0, min(px, tile // 2))


#: tiles start on multiples of this (px): a U-Net that halves its input 3-4 times gives the same output for a
#: shift of the input by a multiple of 16 only; the last tile shifted back to end at the image's edge (603 px:
#: starts 0, 283) put it off that grid, and labels changed hundreds of px away from any tile edge
TILE_GRID = 16


def tile_starts(length: int, tile: int, overlap: int, grid: int = TILE_GRID) -> list[int]:
    """Start offsets of tiles of size ``tile`` covering ``[0, length)``, all multiples of ``grid`` px.

    Tiles advance by ``tile - overlap`` rounded to a multiple of ``grid``: up (as many tiles as
    without the grid) where they still overlap by ``min(overlap, grid)`` px or more, else down (they
    overlap more); the blending weighs the overlap either way. The last tile starts on the grid
    at or past ``length - tile``, so it may run up to ``grid - 1`` px past the image's end (the
    caller pads, as it pads an image shorter than a tile). For ``length <= tile`` a single tile at
    0 is returned. A ``tile`` smaller than ``grid`` is not aligned (``grid`` 1).
    """
    if length <= tile:
        return [0]
    grid = int(grid) if tile >= grid > 0 else 1
    up = -(-(tile - overlap) // grid) * grid
    stride = up if tile - up >= min(overlap, grid) else max(grid, (tile - overlap) // grid * grid)
    last = -(-(length - tile) // grid) * grid  # the first grid position from which a tile reaches the end
    starts = list(range(0, last, stride))
    starts.append(last)
    return sorted(set(starts))


def fitted_tile(length: int, max_tile: int, overlap: int, multiple: int = 16) -> int:
    """The smallest tile side (px) that covers ``length`` px with as few tiles as ``max_tile`` needs.

    Tiles of ``max_tile`` over an image that is not a whole number of strides long
    waste work: a 512 px side takes three 256 px tiles (768 px of network input),
    a 100 px image is padded to a whole tile. The fitted side spreads the same
    number of tiles evenly, each ``overlap`` px (at least) into its neighbour:
    ``n = len(tile_starts(length, max_tile, overlap))`` and
    ``side = ceil((length + (n - 1) * overlap) / n)``, rounded up to a multiple of
    ``multiple`` px (U-Nets halve it several times) and never above ``max_tile``.
    One tile covers an image up to ``max_tile``, padded only to the next multiple.
    """
    length, max_tile, overlap = int(length), int(max_tile), int(overlap)
    if length <= max_tile:
        side = length
    else:
        n = len(tile_starts(length, max_tile, overlap))
        side = -(-(length + (n - 1) * overlap) // n)
        side = min(max_tile, -(-side // multiple) * multiple)
        # tiles advance on the 16 px grid (tile_starts): a side that needs more tiles than max_tile grows
        while side < max_tile and len(tile_starts(length, side, overlap)) > n:
            side = min(max_tile, side + multiple)
        return side
    return min(max_tile, -(-side // multiple) * multiple)


def taper_1d(size: int, overlap: int, taper_start: bool = True, taper_end: bool = True) -> np.ndarray:
    """1D blending weights: a raised-cosine ramp over ``overlap`` pixels at each tapered end.

    ``w[i] = sin^2(pi * (i + 0.5) / (2 * overlap))`` for ``i < overlap``, 1 in the
    middle, mirrored at the end. Two such ramps offset by ``size - overlap`` sum
    to exactly 1 where they overlap (partition of unity), and weights are never
    0, so normalising by the weight sum is always defined. Ends that lie on the
    image border are not tapered (``taper_start``/``taper_end`` False).
    """
    w = np.ones(size, dtype=np.float64)
    if overlap > 0:
        ramp = np.sin(np.pi * (np.arange(overlap) + 0.5) / (2 * overlap)) ** 2
        if taper_start:
            w[:overlap] = np.minimum(w[:overlap], ramp)
        if taper_end:
            w[size - overlap:] = np.minimum(w[size - overlap:], ramp[::-1])
    return w


def blending_window(
    tile_shape: tuple[int, int],
    overlap: tuple[int, int],
    border: tuple[bool, bool, bool, bool] = (False, False, False, False),
) -> np.ndarray:
    """Separable 2D blending window, float32 ``tile_shape``.

    ``border`` = (top, bottom, left, right): True where that tile edge lies on
    the image border (no taper there).
    """
    top, bottom, left, right = border
    wy = taper_1d(tile_shape[0], overlap[0], not top, not bottom)
    wx = taper_1d(tile_shape[1], overlap[1], not left, not right)
    return np.outer(wy, wx).astype(np.float32)


def _read_band(source: Any, t: int | None, y0: int, y1: int) -> np.ndarray:
    """Load rows ``[y0, y1)`` of frame ``t`` (all columns) as a numpy array."""
    band = source[y0:y1] if t is None else source[t, y0:y1]
    if hasattr(band, "compute"):  # dask
        band = band.compute()
    return np.asarray(band)


def _pad_to(band: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """Reflect-pad a 2D band at the bottom/right up to ``(rows, cols)``."""
    pr, pc = max(0, rows - band.shape[0]), max(0, cols - band.shape[1])
    if pr == 0 and pc == 0:
        return band
    mode = "reflect" if min(band.shape) > 1 else "edge"
    return np.pad(band, ((0, pr), (0, pc)), mode=mode)


def count_tiles(shape: tuple[int, ...], tile: int | tuple[int, int] = 256, overlap: int | float = 32) -> int:
    """Number of tiles :func:`predict_tiled_iter` runs for an image of ``shape`` (Y,X) or (T,Y,X)."""
    ty, tx = (int(v) for v in _pair(tile))
    oy, ox = (resolve_overlap(t, o) for t, o in zip((ty, tx), _pair(overlap)))
    h, w = shape[-2:]
    n_frames = shape[0] if len(shape) == 3 else 1
    return n_frames * len(tile_starts(h, ty, oy)) * len(tile_starts(w, tx, ox))


def _predict_batch(predict_fn: PredictFn, tiles: list[np.ndarray], n_out: int) -> np.ndarray:
    batch = np.ascontiguousarray(np.stack(tiles)[:, None], dtype=np.float32)
    pred = predict_fn(batch)
    if hasattr(pred, "detach"):  # torch tensor
        pred = pred.detach().cpu().numpy()
    pred = np.asarray(pred, dtype=np.float32)
    expected = (batch.shape[0], n_out) + batch.shape[2:]
    if pred.shape != expected:
        raise ValueError(f"predict_fn returned shape {pred.shape}, expected {expected}")
    return pred


def iter_frame_bands(
    source: Any,
    t: int | None,
    shape_yx: tuple[int, int],
    predict_fn: PredictFn,
    n_out: int,
    tile: tuple[int, int],
    overlap: tuple[int, int],
    batch_size: int = 4,
    transform: BandTransform | None = None,
) -> Iterator[tuple[int, int, np.ndarray] | int]:
    """Predict one frame band by band.

    Yields either an ``int`` (number of tiles just predicted, for progress) or a
    finished block ``(y0, y1, probs)`` with ``probs`` float32 ``(n_out, y1 - y0, W)``;
    finished blocks come in order and tile the frame's rows exactly.
    """
    h, w = shape_yx
    ty, tx = tile
    oy, ox = overlap
    ys = tile_starts(h, ty, oy)
    xs = tile_starts(w, tx, ox)
    pad_w = max(w, xs[-1] + tx)  # the last tile may run past the image's end (it starts on the grid)
    windows: dict[tuple, np.ndarray] = {}
    # accumulator rows cover [acc_y0, acc_y0 + acc.shape[1])
    acc_y0 = 0
    acc = np.zeros((n_out, 0, w), np.float32)
    wsum = np.zeros((0, w), np.float32)
    for bi, y0 in enumerate(ys):
        y1 = min(y0 + ty, h)
        band = _read_band(source, t, y0, y1)
        if transform is not None:
            band = transform(band, 0 if t is None else t)
        band = _pad_to(np.asarray(band, dtype=np.float32), ty, pad_w)
        # grow accumulator to cover this band
        need = y1 - acc_y0
        if need > acc.shape[1]:
            grow = need - acc.shape[1]
            acc = np.concatenate([acc, np.zeros((n_out, grow, w), np.float32)], axis=1)
            wsum = np.concatenate([wsum, np.zeros((grow, w), np.float32)], axis=0)
        for b0 in range(0, len(xs), batch_size):
            bxs = xs[b0:b0 + batch_size]
            tiles = [band[:, x0:x0 + tx] for x0 in bxs]
            pred = _predict_batch(predict_fn, tiles, n_out)
            for x0, p in zip(bxs, pred):
                x1 = min(x0 + tx, w)
                key = (bi == 0, bi == len(ys) - 1, x0 == 0, x0 == xs[-1])
                win = windows.get(key)
                if win is None:
                    win = windows[key] = blending_window((ty, tx), (oy, ox), key)
                hh, ww = y1 - y0, x1 - x0
                r0 = y0 - acc_y0
                acc[:, r0:r0 + hh, x0:x1] += p[:, :hh, :ww] * win[:hh, :ww]
                wsum[r0:r0 + hh, x0:x1] += win[:hh, :ww]
            yield len(bxs)
        # rows before the next band's start are final
        done_to = ys[bi + 1] if bi + 1 < len(ys) else h
        n_done = done_to - acc_y0
        if n_done > 0:
            block = acc[:, :n_done] / wsum[None, :n_done]
            yield (acc_y0, done_to, block)
            acc = acc[:, n_done:].copy()
            wsum = wsum[n_done:].copy()
            acc_y0 = done_to


def _check_image(image: Any) -> tuple[int, ...]:
    shape = tuple(int(s) for s in image.shape)
    if len(shape) not in (2, 3):
        raise InputError(f"expected a 2D (Y,X) image or a (T,Y,X) stack, got shape {shape}")
    if min(shape) == 0:
        raise InputError(f"image is empty (shape {shape})")
    return shape


def predict_tiled_iter(
    image: Any,
    predict_fn: PredictFn,
    n_out: int,
    tile: int | tuple[int, int] = 256,
    overlap: int | float = 32,
    batch_size: int = 4,
    out: Any = None,
    transform: BandTransform | None = None,
    dtype: Any = np.float32,
) -> Generator[Progress, None, Any]:
    """Predict an image tile by tile with blending; a generator yielding :class:`Progress`.

    Parameters
    ----------
    image : array-like, (Y, X) or (T, Y, X)
        numpy, zarr or dask array of any size and dtype; read one band of
        ``tile`` rows at a time (frames of a stack are processed one by one).
    predict_fn : callable
        ``predict_fn(batch)`` with ``batch`` float32 ``(B, 1, tile_y, tile_x)``
        returns ``(B, n_out, tile_y, tile_x)`` (numpy or torch). It handles the
        device (GPU if the model is there).
    n_out : int
        Number of output channels ``K``.
    tile : int or (int, int)
        Tile size in pixels (Y, X). Every batch has exactly this spatial shape.
    overlap : int or float
        Overlap between neighbouring tiles in pixels, or a fraction of the tile
        if < 1. Clipped to half a tile. Default 32 px.
    batch_size : int
        Tiles per ``predict_fn`` call (tiles of one row band are batched).
    out : array-like, optional
        Where to write: shape ``(K, Y, X)`` for 2D input or ``(T, K, Y, X)`` for
        a stack; numpy or zarr (written band by band). Allocated as a numpy
        array of ``dtype`` when None.
    transform : callable, optional
        ``transform(band, t)`` maps each raw band ``(rows, X)`` of frame ``t`` to
        float32 before tiling, e.g. normalisation with parameters computed on
        the whole frame (never per tile: tiles would then disagree).
    dtype : numpy dtype
        dtype of the allocated output (float32 default; float16 halves memory).

    Returns (as the generator's return value)
    ------------------------------------------
    out : the filled output array, probabilities blended as a weighted mean.
    """
    shape = _check_image(image)
    ty, tx = (int(v) for v in _pair(tile))
    if ty < 1 or tx < 1:
        raise ValueError(f"tile must be positive, got {tile}")
    oy, ox = (resolve_overlap(t, o) for t, o in zip((ty, tx), _pair(overlap)))
    batch_size = max(1, int(batch_size))
    stack = len(shape) == 3
    h, w = shape[-2:]
    out_shape = ((shape[0],) if stack else ()) + (n_out, h, w)
    if out is None:
        out = np.zeros(out_shape, dtype=dtype)
    elif tuple(out.shape) != out_shape:
        raise ValueError(f"out has shape {tuple(out.shape)}, expected {out_shape}")
    total = count_tiles(shape, (ty, tx), (oy, ox))
    done = 0
    frames = range(shape[0]) if stack else [None]
    for t in frames:
        for item in iter_frame_bands(image, t, (h, w), predict_fn, n_out, (ty, tx), (oy, ox), batch_size, transform):
            if isinstance(item, tuple):
                y0, y1, block = item
                if stack:
                    out[t, :, y0:y1, :] = block.astype(out.dtype, copy=False)
                else:
                    out[:, y0:y1, :] = block.astype(out.dtype, copy=False)
            else:
                done += item
                msg = f"frame {t + 1}/{shape[0]}" if stack else "tiles"
                yield Progress(done, total, msg)
    return out


def predict_tiled(image: Any, predict_fn: PredictFn, n_out: int, **kwargs: Any) -> Any:
    """Non-generator form of :func:`predict_tiled_iter`; returns the output array."""
    gen = predict_tiled_iter(image, predict_fn, n_out, **kwargs)
    while True:
        try:
            next(gen)
        except StopIteration as stop:
            return stop.value
