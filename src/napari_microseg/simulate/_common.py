"""Helpers shared by the simulators: random generators, smooth noise, JSON-safe params."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from ..errors import InputError


def make_rng(seed: int | None | np.random.Generator) -> np.random.Generator:
    """Return ``np.random.default_rng(seed)`` (a Generator passes through unchanged)."""
    if isinstance(seed, np.random.Generator):
        return seed
    return np.random.default_rng(seed)


def sample_seed(seed: int, index: int) -> int:
    """The seed of sample ``index`` of a run seeded ``seed``: ``SeedSequence([seed, index])`` (what
    ``microseg simulate`` and the Simulation dock both use, so a run's samples are the same in either, and
    runs of neighbouring seeds share none: ``seed + index`` made seed 0's frame 1 seed 1's frame 0)."""
    return int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1)[0])


#: the sample index whose seed draws the defects of "exposures of one CCD" (no frame has it)
SENSOR_SAMPLE_INDEX = 10**9


def jsonable(value: Any) -> Any:
    """Convert numpy scalars/arrays, tuples and nested containers to plain JSON types (NaN and
    infinities to None: JSON has no such numbers)."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, np.generic):
        return jsonable(value.item())  # a NaN float64 too becomes null
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def available_memory_bytes() -> int | None:
    """Memory the system can still give this process, in bytes (Linux ``MemAvailable``; psutil elsewhere);
    None when it cannot be told."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass  # no /proc (not Linux): psutil below
    try:
        import psutil
    except ImportError:
        return None
    return int(psutil.virtual_memory().available)


def check_memory(needed_bytes: float, what: str, advice: str, share: float = 0.8) -> None:
    """Refuse a simulation whose arrays would not fit in memory, before allocating them.

    Parameters
    ----------
    needed_bytes : estimated peak size of the arrays the simulation holds, in bytes.
    what : what is simulated, for the message (e.g. "20 frames of 256 x 256 px").
    advice : what to change, for the message (e.g. "use fewer frames or a smaller size").
    share : the largest share of the available memory the simulation may take.

    Raises
    ------
    InputError when ``needed_bytes`` exceeds ``share`` x the available memory.
    """
    free = available_memory_bytes()
    if free is not None and needed_bytes > share * free:
        raise InputError(f"simulating {what} needs about {needed_bytes / 2**30:.1f} GiB of memory and "
                         f"{free / 2**30:.1f} GiB is free: {advice}")


def check_shape_2d(shape, name: str = "shape", minimum: int = 8) -> tuple[int, int]:
    """Validate a (Y, X) shape and return it as a tuple of ints."""
    try:
        y, x = (int(v) for v in shape)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be two integers (Y, X), got {shape!r}") from None
    if y < minimum or x < minimum:
        raise InputError(f"{name} must be at least {minimum}x{minimum} pixels, got {y}x{x}")
    return y, x


def check_range(pair, name: str, low: float = -np.inf) -> tuple[float, float]:
    """Validate an ordered (min, max) pair."""
    try:
        a, b = (float(v) for v in pair)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a (min, max) pair, got {pair!r}") from None
    if not (a <= b) or a < low:
        raise InputError(f"{name} must satisfy {low} <= min <= max, got ({a}, {b})")
    return a, b


def smooth_noise(shape, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian-filtered white noise with zero mean and unit standard deviation (float32)."""
    field = ndi.gaussian_filter(rng.standard_normal(shape), sigma, mode="wrap")
    sd = field.std()
    return ((field - field.mean()) / (sd if sd > 0 else 1.0)).astype(np.float32)


def _fade(t: np.ndarray) -> np.ndarray:
    return t * t * t * (t * (t * 6 - 15) + 10)


def perlin_noise(shape, cell_size: float, rng: np.random.Generator) -> np.ndarray:
    """2D gradient (Perlin) noise of roughly unit amplitude, features ~``cell_size`` px.

    A small numpy implementation (random unit gradients on a lattice, quintic fade);
    returns float32 (Y, X) with values in about [-1, 1].
    """
    ny, nx = shape
    gy = int(math.ceil(ny / cell_size)) + 2
    gx = int(math.ceil(nx / cell_size)) + 2
    angles = rng.uniform(0, 2 * np.pi, (gy, gx))
    oy, ox = rng.uniform(0, 1, 2)
    y = np.arange(ny) / cell_size + oy
    x = np.arange(nx) / cell_size + ox
    y0 = np.floor(y).astype(int)
    x0 = np.floor(x).astype(int)
    fy = (y - y0)[:, None].astype(np.float32)
    fx = (x - x0)[None, :].astype(np.float32)
    gcos = np.cos(angles).astype(np.float32)
    gsin = np.sin(angles).astype(np.float32)

    def dot(dy_idx, dx_idx, dy, dx):
        # separable gathers (rows then columns) are much faster than 2D fancy indexing
        a = gcos.take(y0 + dy_idx, axis=0).take(x0 + dx_idx, axis=1)
        b = gsin.take(y0 + dy_idx, axis=0).take(x0 + dx_idx, axis=1)
        return a * dy + b * dx

    n00 = dot(0, 0, fy, fx)
    n01 = dot(0, 1, fy, fx - 1)
    n10 = dot(1, 0, fy - 1, fx)
    n11 = dot(1, 1, fy - 1, fx - 1)
    uy, ux = _fade(fy), _fade(fx)
    nx0 = n00 + ux * (n01 - n00)
    nx1 = n10 + ux * (n11 - n10)
    return (np.sqrt(2) * (nx0 + uy * (nx1 - nx0))).astype(np.float32)


def fractal_perlin(shape, cell_size: float, rng: np.random.Generator, octaves: int = 4, persistence: float = 0.5) -> np.ndarray:
    """Sum of ``octaves`` Perlin layers (each half the cell size, ``persistence`` x the amplitude), ~unit sd."""
    total = np.zeros(shape, np.float32)
    amp = 1.0
    for k in range(octaves):
        total += amp * perlin_noise(shape, max(cell_size / 2**k, 1.0), rng)
        amp *= persistence
    sd = total.std()
    return total / (sd if sd > 0 else 1.0)


def illumination_field(shape, strength: float, rng: np.random.Generator) -> np.ndarray:
    """Uneven illumination: a smooth bump with a random off-centre peak, 1 at the peak, ``1-strength`` far away."""
    ny, nx = shape
    cy, cx = rng.uniform(0.25, 0.75, 2) * (ny, nx)
    s = rng.uniform(0.6, 1.2) * max(ny, nx)
    yy, xx = np.ogrid[:ny, :nx]
    bump = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * s * s))
    return (1.0 - strength + strength * bump).astype(np.float32)
