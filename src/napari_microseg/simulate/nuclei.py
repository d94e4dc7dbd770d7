"""Simulated nuclei: fluorescence + phase-contrast time-lapses with exact labels and tracks ([N]).

Two entry points:

* :func:`simulate_nuclei_timelapse` -- a (T, Y, X) movie of nuclei that move
  (Brownian motion + drift), divide, die, enter and leave the field, with an
  optional global stage shift per frame. It returns a fluorescence channel, a
  registered phase-contrast-like channel, instance labels whose value equals the
  nucleus' ``track_id`` in every frame, and the ground-truth tracks table.
* :func:`simulate_nuclei_image` -- one fluorescence-like image with a randomly
  varied appearance (brightness, contrast, blur, noise, background, sizes,
  clustering) for training segmentation networks that should generalise to
  real nuclear-stain images (e.g. DSB2018).

Nuclei are textured ellipses whose outline is perturbed by low-order harmonics
(``r(theta) = 1 + sum_k c_k cos(k theta + phi_k)``), so they are not perfect
ellipses. Overlapping nuclei are drawn in order; a later-drawn nucleus wins the
label pixels, so the label image is always a partition.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Generator
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import ndimage as ndi

from ..errors import InputError
from ..progress import Progress, drain
from ._common import check_memory, check_range, check_shape_2d, illumination_field, jsonable, make_rng, smooth_noise

TRACK_COLUMNS = ["track_id", "t", "y", "x", "parent_track_id", "root_track_id", "generation", "label", "area"]
EVENT_COLUMNS = ["t", "track_id", "event"]

_TEXTURE_SIZE = 24
#: nuclei skipped in a row (each after 30 tries) after which the canvas counts as full and placing stops
FULL_FIELD_MISSES = 100


@dataclass
class NucleiTimelapse:
    """A simulated nuclei time-lapse.

    Attributes
    ----------
    fluorescence : (T, Y, X) float32 or uint16 array, photon counts (nuclear stain).
    phase : (T, Y, X) float32 array in about [0, 1]; phase-contrast-like (grey
        background, dark nuclei inside darker-grey cells, bright halos at edges).
        Registered with ``fluorescence``.
    labels : (T, Y, X) uint16 instance labels; a nucleus' value equals its
        ``track_id`` in every frame where it is visible; 0 is background.
    tracks : DataFrame with one row per visible nucleus per frame and columns
        ``track_id, t, y, x, parent_track_id, root_track_id, generation, label,
        area``. ``y, x`` is the centroid (pixels) of the drawn label region;
        ``parent_track_id`` is 0 for roots; ``label == track_id``.
    events : DataFrame ``t, track_id, event`` with event in {"division",
        "death", "leave", "enter"}; ``t`` is the last frame of the track for
        division/death/leave and the first frame for enter.
    stage_offsets : (T, 2) float array, global (dy, dx) stage shift of each frame in pixels.
    params : every parameter used (JSON-serialisable).
    """

    fluorescence: np.ndarray
    phase: np.ndarray
    labels: np.ndarray
    tracks: pd.DataFrame
    events: pd.DataFrame
    stage_offsets: np.ndarray
    params: dict = field(default_factory=dict)


@dataclass
class _Nucleus:
    y: float
    x: float
    a: float  # semi-axis along `angle` (px)
    b: float  # perpendicular semi-axis (px)
    angle: float  # radians
    target_a: float
    target_b: float
    brightness: float
    harmonics: np.ndarray  # (K, 3): order, amplitude, phase
    texture: np.ndarray  # (_TEXTURE_SIZE, _TEXTURE_SIZE), unit sd
    cell_scale: float
    cell_offset: tuple[float, float]
    age: int = 0
    track_id: int = 0  # 0: not currently tracked (not yet visible, or left)
    ever_tracked: bool = False
    parent_track_id: int = 0
    root_track_id: int = 0
    generation: int = 0
    dying: int = -1  # frames left before disappearing; -1 = healthy

    @property
    def radius(self) -> float:
        return float(np.sqrt(self.a * self.b))

    @property
    def outer_radius(self) -> float:
        return float(max(self.a, self.b) * (1.0 + np.abs(self.harmonics[:, 1]).sum()))


def _random_harmonics(rng: np.random.Generator, irregularity: float) -> np.ndarray:
    orders = np.array([2.0, 3.0, 4.0])
    amps = rng.uniform(0, irregularity, 3) / orders
    phases = rng.uniform(0, 2 * np.pi, 3)
    return np.stack([orders, amps, phases], axis=1)


def _new_nucleus(rng, y, x, diameter_range, aspect_range, brightness_range, irregularity, texture_sigma=1.6) -> _Nucleus:
    d = rng.uniform(*diameter_range)
    aspect = rng.uniform(*aspect_range)
    a = d / 2 * np.sqrt(aspect)
    b = d / 2 / np.sqrt(aspect)
    return _Nucleus(
        y=float(y),
        x=float(x),
        a=a,
        b=b,
        angle=float(rng.uniform(0, np.pi)),
        target_a=a,
        target_b=b,
        brightness=float(rng.uniform(*brightness_range)),
        harmonics=_random_harmonics(rng, irregularity),
        texture=smooth_noise((_TEXTURE_SIZE, _TEXTURE_SIZE), texture_sigma, rng),
        cell_scale=float(rng.uniform(1.6, 2.2)),
        cell_offset=tuple(rng.normal(0, 0.25, 2)),
    )


def _stamp(cy: float, cx: float, a: float, b: float, angle: float, harmonics: np.ndarray | None, canvas_shape, pad: int = 2):
    """Rasterise a (perturbed) ellipse centred at (cy, cx).

    Returns ``(slices, inside, rel)`` where ``inside`` is the boolean mask over
    the clipped bounding box, ``rel`` = e / r(theta) (0 at the centre, 1 on the
    outline) and ``(u, v)`` normalised body coordinates for texture lookup;
    ``None`` when the box is outside the canvas.
    """
    amp = 0.0 if harmonics is None else float(np.abs(harmonics[:, 1]).sum())
    R = int(np.ceil(max(a, b) * (1 + amp))) + pad
    iy, ix = int(round(cy)), int(round(cx))
    y0, y1 = max(iy - R, 0), min(iy + R + 1, canvas_shape[0])
    x0, x1 = max(ix - R, 0), min(ix + R + 1, canvas_shape[1])
    if y0 >= y1 or x0 >= x1:
        return None
    dy = (np.arange(y0, y1) - cy)[:, None]
    dx = (np.arange(x0, x1) - cx)[None, :]
    c, s = np.cos(angle), np.sin(angle)
    u = (dy * s + dx * c) / a
    v = (-dy * c + dx * s) / b
    e = np.sqrt(u * u + v * v)
    if harmonics is not None and amp > 0:
        theta = np.arctan2(v, u)
        r = np.ones_like(e)
        for k, amp_k, phase_k in harmonics:
            r += amp_k * np.cos(k * theta + phase_k)
    else:
        r = 1.0
    rel = e / r
    inside = rel <= 1.0
    return (slice(y0, y1), slice(x0, x1)), inside, rel, u, v


def _texture_at(texture: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    n = texture.shape[0]
    cu = (u + 1.2) / 2.4 * (n - 1)
    cv = (v + 1.2) / 2.4 * (n - 1)
    return ndi.map_coordinates(texture, [np.clip(cu, 0, n - 1), np.clip(cv, 0, n - 1)], order=1, mode="nearest")


def _nucleus_profile(rel: np.ndarray, inside: np.ndarray, tex: np.ndarray, texture_strength: float) -> np.ndarray:
    dome = 0.8 + 0.2 * np.clip(1 - rel * rel, 0, 1)
    return np.where(inside, dome * np.clip(1 + texture_strength * tex, 0.2, None), 0.0)


def _min_distances(nuclei: list[_Nucleus], allow_touching: bool, touch_factor: float, gap: float) -> np.ndarray:
    if allow_touching:
        r = np.array([n.radius for n in nuclei])
        return touch_factor * (r[:, None] + r[None, :])
    r = np.array([n.outer_radius for n in nuclei])
    return r[:, None] + r[None, :] + gap


def _repel(nuclei: list[_Nucleus], allow_touching: bool, touch_factor: float, gap: float, iterations: int = 8) -> None:
    """Push nuclei apart until pairwise centre distances exceed the minimum (soft collisions)."""
    if len(nuclei) < 2:
        return
    pos = np.array([[n.y, n.x] for n in nuclei], float)
    dmin = _min_distances(nuclei, allow_touching, touch_factor, gap)
    np.fill_diagonal(dmin, 0)
    for _ in range(iterations):
        diff = pos[:, None, :] - pos[None, :, :]
        dist = np.sqrt((diff**2).sum(-1))
        np.fill_diagonal(dist, np.inf)
        overlap = np.clip(dmin - dist, 0, None)
        if not overlap.any():
            break
        safe = np.where(dist > 1e-6, dist, 1.0)
        direction = diff / safe[..., None]
        # coincident centres: push along a fixed axis
        direction[dist <= 1e-6] = (1.0, 0.0)
        pos += 0.5 * (overlap[..., None] * direction).sum(1) * 1.05
    for n, (y, x) in zip(nuclei, pos):
        n.y, n.x = float(y), float(x)


def _render_frame(nuclei, ext_shape, margin, field_shape, offset, texture_strength, out_labels, out_signal, out_nuc_mask, out_cell_mask, out_nuc_tex):
    """Draw all nuclei onto the extended canvas; return the list of nuclei whose outline reaches the field."""
    visible = []
    fy0, fx0 = margin, margin
    fy1, fx1 = margin + field_shape[0], margin + field_shape[1]
    oy, ox = offset
    for n in nuclei:
        cy, cx = n.y + oy, n.x + ox
        st = _stamp(cy, cx, n.a, n.b, n.angle, n.harmonics, ext_shape)
        if st is None:
            continue
        (sy, sx), inside, rel, u, v = st
        if not inside.any():
            continue
        ys, xs = np.nonzero(inside)
        ys = ys + sy.start
        xs = xs + sx.start
        in_field = (ys >= fy0) & (ys < fy1) & (xs >= fx0) & (xs < fx1)
        if in_field.any():
            visible.append(n)
        tex = _texture_at(n.texture, u, v)
        prof = _nucleus_profile(rel, inside, tex, texture_strength)
        out_signal[sy, sx] += n.brightness * prof
        out_nuc_mask[sy, sx] = np.maximum(out_nuc_mask[sy, sx], inside)
        out_nuc_tex[sy, sx] += np.where(inside, tex, 0)
        if n.track_id:
            out_labels[sy, sx][inside] = n.track_id
        # the cell body around the nucleus (phase channel only)
        ccy = cy + n.cell_offset[0] * n.radius
        ccx = cx + n.cell_offset[1] * n.radius
        cst = _stamp(ccy, ccx, n.a * n.cell_scale, n.b * n.cell_scale, n.angle + 0.3, n.harmonics, ext_shape)
        if cst is not None:
            (csy, csx), cin, _, _, _ = cst
            out_cell_mask[csy, csx] = np.maximum(out_cell_mask[csy, csx], cin)
    return visible


def _phase_image(nuc_mask, cell_mask, nuc_tex, rng, halo_strength, noise_sd):
    cell = ndi.gaussian_filter(cell_mask.astype(np.float32), 1.5)
    nuc = ndi.gaussian_filter(nuc_mask.astype(np.float32), 0.8)
    halo_cell = np.clip(ndi.gaussian_filter(cell_mask.astype(np.float32), 2.5) - cell_mask, 0, None)
    halo_nuc = np.clip(ndi.gaussian_filter(nuc_mask.astype(np.float32), 1.5) - nuc_mask, 0, None)
    ny, nx = nuc_mask.shape
    yy, xx = np.mgrid[:ny, :nx] / max(ny, nx)
    gy, gx = rng.normal(0, 0.03, 2)
    background = 0.5 + gy * (yy - 0.5) + gx * (xx - 0.5) + 0.015 * smooth_noise(nuc_mask.shape, 6.0, rng)
    phase = (
        background
        - 0.07 * cell
        - 0.2 * nuc
        - 0.05 * ndi.gaussian_filter(nuc_tex, 0.7) * nuc
        + halo_strength * (0.9 * halo_cell + 0.5 * halo_nuc)
    )
    phase += rng.normal(0, noise_sd, phase.shape)
    return phase.astype(np.float32)


def _without_unseen_tracks(tracks: pd.DataFrame) -> pd.DataFrame:
    """``tracks`` whose parents and roots all have rows: a daughter of a mother that was never drawn (it got
    an id while another nucleus hid it) becomes a root of generation 0, and its lineage's
    ``root_track_id`` and ``generation`` follow. Such daughters appear without an event: the mother's
    division is not in ``events`` (it has no rows), and they were born in the field, not entering it."""
    seen = set(tracks["track_id"].tolist())
    parents = tracks.groupby("track_id")["parent_track_id"].first()
    if all(p == 0 or p in seen for p in parents):
        return tracks
    parents = {tid: (p if p in seen else 0) for tid, p in parents.items()}
    lineage: dict = {}  # track id -> (root id, generation)

    def place(tid):
        if tid not in lineage:
            lineage[tid] = (tid, 0) if not parents[tid] else (place(parents[tid])[0], place(parents[tid])[1] + 1)
        return lineage[tid]

    tracks = tracks.copy()
    tracks["parent_track_id"] = tracks["track_id"].map(parents).astype(int)
    tracks["root_track_id"] = tracks["track_id"].map(lambda tid: place(tid)[0]).astype(int)
    tracks["generation"] = tracks["track_id"].map(lambda tid: place(tid)[1]).astype(int)
    return tracks


#: power of the density feedback on the division and death probabilities (see ``n_nuclei``)
REGULATION_POWER = 6


def simulate_nuclei_timelapse_iter(
    n_frames: int = 20,
    shape: tuple[int, int] = (256, 256),
    n_nuclei: int = 30,
    diameter_range: tuple[float, float] = (8.0, 20.0),
    seed: int | None = 0,
    division_rate: float = 0.02,
    death_rate: float = 0.012,
    motion_sd: float = 1.0,
    drift: tuple[float, float] = (0.0, 0.0),
    stage_shift_sd: float = 0.0,
    allow_touching: bool = True,
    enter_leave: bool = True,
    output_dtype: str = "float32",
    aspect_range: tuple[float, float] = (1.0, 1.6),
    irregularity: float = 0.15,
    brightness_range: tuple[float, float] = (600.0, 1400.0),
    background: float = 100.0,
    illumination_falloff: float = 0.3,
    psf_sigma: float = 1.0,
    read_noise_sd: float = 5.0,
    texture_strength: float = 0.25,
    rotation_sd: float = 0.05,
    min_division_age: int = 4,
    death_frames: int = 2,
    touch_factor: float = 0.85,
    phase_noise_sd: float = 0.015,
    halo_strength: float = 1.0,
) -> Generator[Progress, None, NucleiTimelapse]:
    """Simulate a nuclei time-lapse with fluorescence, phase contrast, labels and tracks.

    ``simulate_nuclei_timelapse`` returns the result; ``simulate_nuclei_timelapse_iter``
    is a generator of the same arguments that yields a :class:`Progress` after each
    frame and returns the result (for progress bars and Stop buttons).

    Parameters
    ----------
    n_frames : number of frames T.
    shape : (Y, X) frame size in pixels.
    n_nuclei : mean number of nuclei whose centre lies in the field (the population is
        regulated towards it: the division probability is scaled by (target/current) ** 6 and the
        death probability by (current/target) ** 6, each clipped to x0.5..x2; with the default
        rates it settles about 4 % above the target). With ``enter_leave``,
        nuclei cut by the field's border are labelled too: a frame holds more objects than
        this, about 30 % more on a 96 px field, 10 % on 256 px (a band of one radius).
    diameter_range : nucleus diameter range in pixels (the study: 5-30 px).
    seed : seed for ``np.random.default_rng``.
    division_rate, death_rate : per-nucleus, per-frame probabilities at the target density.
    motion_sd : Brownian step standard deviation (px per frame per axis).
    drift : (dy, dx) mean displacement per frame in pixels, common to all nuclei.
    stage_shift_sd : sd (px) of a global random stage offset per frame (not
        cumulative; frame 0 has none). All nuclei jump together, as in [N].
    allow_touching : if True nuclei may touch and overlap slightly (centres kept
        at least ``touch_factor`` x (r_i + r_j) apart: collisions); if False a
        gap of >= 2 px is kept between outlines.
    enter_leave : simulate on a canvas larger than the field (margin > nucleus
        size, periodic) so nuclei drift in and out; if False nuclei are kept inside.
    output_dtype : "float32" (photon counts) or "uint16" (rounded, clipped counts).
    aspect_range : ratio of long to short axis.
    irregularity : amplitude of the outline harmonics (0 = perfect ellipses).
    brightness_range : nucleus signal in photons above background (before illumination falloff).
    background : background photons per pixel.
    illumination_falloff : relative dimming of the uneven illumination far from its peak.
    psf_sigma : Gaussian blur (px) of the fluorescence.
    read_noise_sd : Gaussian camera noise (photons) added after Poisson noise.
    texture_strength : relative amplitude of chromatin texture.
    rotation_sd : per-frame random rotation (radians).
    min_division_age : frames a nucleus must exist before it can divide.
    death_frames : frames a dying nucleus spends shrinking and brightening
        (apoptotic condensation) before it disappears.
    touch_factor : see ``allow_touching``.
    phase_noise_sd, halo_strength : noise and halo brightness of the phase channel.

    Returns
    -------
    NucleiTimelapse

    Notes
    -----
    Track identity rules: a nucleus gets a new ``track_id`` the first time its
    outline reaches the field; the id is kept while it is visible (also through
    frames where it is fully hidden by another nucleus; those rows are dropped);
    its track ends when it divides (two daughters with new ids and
    ``parent_track_id`` = the mother's id appear next to each other in the next
    frame), dies, or leaves the field (no pixel of its outline in the field). A
    nucleus that re-enters gets a new id.
    """
    ny, nx = check_shape_2d(shape)
    if int(n_frames) < 1:
        raise InputError(f"n_frames must be >= 1, got {n_frames}")
    if int(n_nuclei) < 0:
        raise InputError(f"n_nuclei must be >= 0, got {n_nuclei}")
    d_lo, d_hi = check_range(diameter_range, "diameter_range", low=2.0)
    if output_dtype not in ("float32", "uint16"):
        raise InputError(f"output_dtype must be 'float32' or 'uint16', got {output_dtype!r}")
    for name, p in (("division_rate", division_rate), ("death_rate", death_rate)):
        if not 0 <= p <= 1:
            raise InputError(f"{name} must be a probability in [0, 1], got {p}")
    n_frames = int(n_frames)
    n_nuclei = int(n_nuclei)
    params = jsonable({k: v for k, v in locals().items() if k not in ("ny", "nx", "d_lo", "d_hi", "name", "p")})
    # fluorescence + phase (float32) + labels (uint16), and the uint16 copy of the fluorescence
    bytes_per_pixel = 4 + 4 + 2 + (2 if output_dtype == "uint16" else 0)
    check_memory(n_frames * ny * nx * bytes_per_pixel, f"{n_frames} frames of {ny} x {nx} px",
                 "use fewer frames or a smaller size")
    rng = make_rng(seed)
    diameter_range = (d_lo, d_hi)

    max_outer = d_hi / 2 * np.sqrt(aspect_range[1]) * (1 + irregularity)
    stage_offsets = np.zeros((n_frames, 2))
    if stage_shift_sd > 0 and n_frames > 1:
        stage_offsets[1:] = rng.normal(0, stage_shift_sd, (n_frames - 1, 2))
    margin = int(np.ceil(2 * max_outer + 4 * psf_sigma + 4)) if enter_leave else int(np.ceil(4 * psf_sigma + 4))
    if enter_leave:  # the stage shows other parts of the specimen: the canvas holds nuclei as far as it moves
        margin += int(np.ceil(np.abs(stage_offsets).max()))
    ext = (ny + 2 * margin, nx + 2 * margin)
    target = n_nuclei * (ext[0] * ext[1]) / (ny * nx) if enter_leave else n_nuclei
    gap = 2.0

    def bounds(n: _Nucleus):
        if enter_leave:
            return (0.0, ext[0]), (0.0, ext[1])
        r = n.outer_radius + 1
        return (margin + r, margin + ny - r), (margin + r, margin + nx - r)

    def random_position(n: _Nucleus):
        (ylo, yhi), (xlo, xhi) = bounds(n)
        if yhi <= ylo or xhi <= xlo:
            return (ylo + yhi) / 2, (xlo + xhi) / 2
        return rng.uniform(ylo, yhi), rng.uniform(xlo, xhi)

    nuclei: list[_Nucleus] = []
    n_target = int(round(target))
    # centres and radii of the placed nuclei, kept as arrays: each try is one vectorised distance test
    placed_yx = np.empty((max(n_target, 1), 2))
    placed_r = np.empty(max(n_target, 1))
    misses_in_a_row = 0
    for i in range(n_target):
        if misses_in_a_row >= FULL_FIELD_MISSES:
            break  # the canvas is full: every further nucleus would be tried 30 times in vain
        if i % 2000 == 1999:
            yield Progress(0, n_frames, f"placing nuclei: {len(nuclei)} of {n_target} ...")
        n = _new_nucleus(rng, 0, 0, diameter_range, aspect_range, brightness_range, irregularity)
        radius = n.radius if allow_touching else n.outer_radius
        k = len(nuclei)
        for _attempt in range(30):
            n.y, n.x = random_position(n)
            if k == 0:
                break
            dmin = (touch_factor * (placed_r[:k] + radius) if allow_touching else placed_r[:k] + radius + gap)
            if np.all(np.hypot(placed_yx[:k, 0] - n.y, placed_yx[:k, 1] - n.x) >= dmin):
                break
        else:
            misses_in_a_row += 1
            continue  # too crowded: skip this nucleus
        misses_in_a_row = 0
        n.age = int(rng.integers(0, 3 * max(min_division_age, 1)))
        placed_yx[k] = (n.y, n.x)
        placed_r[k] = radius
        nuclei.append(n)
    in_field = len(nuclei) * (ny * nx) / (ext[0] * ext[1]) if enter_leave else len(nuclei)
    params["n_nuclei_placed"] = int(round(in_field))
    if n_target and len(nuclei) < 0.9 * n_target:
        params["crowding_note"] = (f"only about {round(in_field)} of the {n_nuclei} nuclei asked for fit in the "
                                   f"{ny} x {nx} px field at diameters {d_lo:g}-{d_hi:g} px: ask for fewer nuclei, "
                                   "smaller ones or a larger field")

    illum = illumination_field((ny, nx), illumination_falloff, rng)
    fluo = np.zeros((n_frames, ny, nx), np.float32)
    phase = np.zeros((n_frames, ny, nx), np.float32)
    labels = np.zeros((n_frames, ny, nx), np.uint16)
    rows: list[tuple] = []
    events: list[tuple] = []
    next_id = 1
    yy_field, xx_field = np.mgrid[:ny, :nx]

    for t in range(n_frames):
        if t > 0:
            # --- events: death, division ------------------------------------
            current = max(len(nuclei), 1)
            # steep feedback: with rates that differ at the target (more divisions than deaths), the
            # population settles where they balance, (division / death) ** (1 / (2 x REGULATION_POWER)) x
            # the target (x 1.04 at the defaults; a power of 1 left it at x 1.29)
            div_p = (division_rate * float(np.clip((target / current) ** REGULATION_POWER, 0.5, 2.0))
                     if target > 0 else 0.0)
            death_p = death_rate * float(np.clip((current / max(target, 1)) ** REGULATION_POWER, 0.5, 2.0))
            survivors: list[_Nucleus] = []
            for n in nuclei:
                n.age += 1
                if n.dying >= 0:
                    n.dying -= 1
                    if n.dying < 0:
                        if n.track_id:
                            events.append((t - 1, n.track_id, "death"))
                        continue
                    n.a *= 0.85
                    n.b *= 0.85
                    n.brightness *= 1.3
                    survivors.append(n)
                    continue
                u = rng.random()
                if u < death_p:
                    if death_frames > 0:
                        n.dying = death_frames - 1
                        n.a *= 0.85
                        n.b *= 0.85
                        n.brightness *= 1.3
                        survivors.append(n)
                    elif n.track_id:
                        events.append((t - 1, n.track_id, "death"))
                    continue
                if u < death_p + div_p and n.age >= min_division_age:
                    if n.track_id:
                        events.append((t - 1, n.track_id, "division"))
                    c, s = np.cos(n.angle), np.sin(n.angle)
                    sep = 0.55 * n.a
                    for sign in (-1, 1):
                        d = _new_nucleus(rng, n.y + sign * sep * s, n.x + sign * sep * c, diameter_range, aspect_range, brightness_range, irregularity)
                        d.a, d.b = n.a / np.sqrt(2) * 1.1, n.b / np.sqrt(2)
                        d.angle = n.angle + rng.normal(0, 0.2)
                        d.brightness = n.brightness * rng.uniform(0.9, 1.1)
                        d.parent_track_id = n.track_id
                        d.root_track_id = n.root_track_id if n.track_id else 0  # a mother out of sight: a new root if seen
                        d.generation = n.generation + 1 if n.track_id else 0
                        survivors.append(d)
                    continue
                survivors.append(n)
            nuclei = survivors
            # --- motion -----------------------------------------------------
            for n in nuclei:
                n.y += rng.normal(0, motion_sd) + drift[0]
                n.x += rng.normal(0, motion_sd) + drift[1]
                n.angle += rng.normal(0, rotation_sd)
                if n.dying < 0:  # growth towards the target size
                    n.a += 0.15 * (n.target_a - n.a)
                    n.b += 0.15 * (n.target_b - n.b)
            _repel(nuclei, allow_touching, touch_factor, gap)
            for n in nuclei:
                (ylo, yhi), (xlo, xhi) = bounds(n)
                if enter_leave:  # periodic extended canvas (the wrap happens out of sight)
                    n.y = ylo + (n.y - ylo) % (yhi - ylo)
                    n.x = xlo + (n.x - xlo) % (xhi - xlo)
                else:  # reflect at the field borders
                    n.y = float(np.clip(n.y if n.y >= ylo else 2 * ylo - n.y, ylo, max(yhi, ylo)))
                    n.y = float(np.clip(n.y if n.y <= yhi else 2 * yhi - n.y, ylo, max(yhi, ylo)))
                    n.x = float(np.clip(n.x if n.x >= xlo else 2 * xlo - n.x, xlo, max(xhi, xlo)))
                    n.x = float(np.clip(n.x if n.x <= xhi else 2 * xhi - n.x, xlo, max(xhi, xlo)))

        # --- visibility and ids (geometric outline reaches the field) ----------
        offset = stage_offsets[t]
        fy0, fx0 = margin, margin
        for n in nuclei:
            cy, cx = n.y + offset[0], n.x + offset[1]
            r = n.outer_radius + 1
            reaches = (cy + r >= fy0) and (cy - r < fy0 + ny) and (cx + r >= fx0) and (cx - r < fx0 + nx)
            if reaches:
                st = _stamp(cy, cx, n.a, n.b, n.angle, n.harmonics, ext)
                if st is not None:
                    (sy, sx), inside, *_ = st
                    ys = np.arange(sy.start, sy.stop)[:, None]
                    xs = np.arange(sx.start, sx.stop)[None, :]
                    in_field = (ys >= fy0) & (ys < fy0 + ny) & (xs >= fx0) & (xs < fx0 + nx)
                    reaches = bool((inside & in_field).any())
                else:
                    reaches = False
            if reaches and not n.track_id:
                n.track_id = next_id
                next_id += 1
                newborn = n.age == 0 and n.parent_track_id != 0
                if n.ever_tracked:  # re-entry after leaving: a new root
                    n.parent_track_id, n.generation, n.root_track_id = 0, 0, 0
                if not n.root_track_id:
                    n.root_track_id = n.track_id
                if t > 0 and not newborn:
                    events.append((t, n.track_id, "enter"))
                n.ever_tracked = True
            elif not reaches and n.track_id:
                events.append((t - 1, n.track_id, "leave"))
                n.track_id = 0
            elif not reaches and n.age == 0 and n.parent_track_id:
                # a daughter born out of sight: if it enters later it is a new root
                n.parent_track_id, n.generation, n.root_track_id = 0, 0, 0
        if next_id > 65535:
            raise InputError("too many tracks for uint16 labels; use fewer frames or nuclei")

        # --- render ------------------------------------------------------------
        lab_ext = np.zeros(ext, np.uint16)
        sig_ext = np.zeros(ext, np.float32)
        nuc_ext = np.zeros(ext, bool)
        cell_ext = np.zeros(ext, bool)
        tex_ext = np.zeros(ext, np.float32)
        _render_frame(nuclei, ext, margin, (ny, nx), offset, texture_strength, lab_ext, sig_ext, nuc_ext, cell_ext, tex_ext)
        crop = (slice(margin, margin + ny), slice(margin, margin + nx))
        lab = lab_ext[crop]
        signal = ndi.gaussian_filter(sig_ext, psf_sigma)[crop] if psf_sigma > 0 else sig_ext[crop]
        expected = (background + signal) * illum
        counts = rng.poisson(np.clip(expected, 0, None)).astype(np.float32)
        counts += rng.normal(0, read_noise_sd, counts.shape).astype(np.float32)
        fluo[t] = counts
        phase[t] = _phase_image(nuc_ext, cell_ext, tex_ext, rng, halo_strength, phase_noise_sd)[crop]
        labels[t] = lab

        # --- tracks from the drawn labels -------------------------------------
        flat = lab.ravel()
        n_max = int(flat.max()) + 1 if flat.size else 1
        area = np.bincount(flat, minlength=n_max)
        sum_y = np.bincount(flat, weights=yy_field.ravel(), minlength=n_max)
        sum_x = np.bincount(flat, weights=xx_field.ravel(), minlength=n_max)
        for n in nuclei:
            tid = n.track_id
            if tid and tid < n_max and area[tid] > 0:
                rows.append((tid, t, sum_y[tid] / area[tid], sum_x[tid] / area[tid], n.parent_track_id, n.root_track_id or tid, n.generation, tid, int(area[tid])))
        yield Progress(t + 1, n_frames, f"simulated frame {t + 1}/{n_frames}")

    tracks = pd.DataFrame(rows, columns=TRACK_COLUMNS)
    tracks = tracks.astype({"track_id": int, "t": int, "parent_track_id": int, "root_track_id": int, "generation": int, "label": int, "area": int})
    tracks = tracks.sort_values(["track_id", "t"], kind="stable").reset_index(drop=True)
    tracks = _without_unseen_tracks(tracks)
    events_df = pd.DataFrame(events, columns=EVENT_COLUMNS)
    # a nucleus that got an id while another hid it, and stayed hidden, has no rows: nor events; one hidden
    # in its first or last frames enters at its first row and leaves, divides or dies at its last
    events_df = events_df[events_df["track_id"].isin(tracks["track_id"])].copy()
    span = tracks.groupby("track_id")["t"].agg(["min", "max"])
    entering = events_df["event"] == "enter"
    events_df["t"] = np.where(entering, events_df["track_id"].map(span["min"]), events_df["track_id"].map(span["max"]))
    events_df = events_df.sort_values(["t", "track_id"], kind="stable").reset_index(drop=True)
    if output_dtype == "uint16":
        fluorescence = np.clip(np.rint(fluo), 0, 65535).astype(np.uint16)
    else:
        fluorescence = fluo
    params.update(margin=margin, n_tracks=int(next_id - 1), stage_offsets=stage_offsets.tolist())
    return NucleiTimelapse(fluorescence, phase, labels, tracks, events_df, stage_offsets, params)


def simulate_nuclei_timelapse(*args, **kwargs) -> NucleiTimelapse:
    return drain(simulate_nuclei_timelapse_iter(*args, **kwargs))


# the same documentation and signature as the generator form (not its name: pickling finds functions by name)
functools.update_wrapper(simulate_nuclei_timelapse, simulate_nuclei_timelapse_iter, assigned=("__doc__",))
simulate_nuclei_timelapse.__signature__ = inspect.signature(simulate_nuclei_timelapse_iter).replace(
    return_annotation="NucleiTimelapse")


def simulate_nuclei_image(
    shape: tuple[int, int] = (256, 256),
    n_nuclei: int | None = 40,
    seed: int | None = 0,
    diameter_range: tuple[float, float] | None = None,
    vary_appearance: bool = True,
    cluster_fraction: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """One fluorescence-like nuclei image with instance labels, for training.

    The appearance is drawn at random per call (when ``vary_appearance``):
    background level 0-0.12, nucleus brightness 0.2-0.95 with a per-nucleus
    spread up to x2.5 (dim and bright nuclei in one image), blur sigma 0.3-2 px,
    Gaussian noise sd 0.002-0.03 (log-uniform) plus optional Poisson-like noise, uneven
    illumination, gamma 0.7-1.4, optional uint8 quantisation. Sizes follow
    DSB2018 (nuclei mostly 10-40 px across): the diameter range is drawn per
    call unless given. A fraction of the nuclei is placed in touching clusters.

    Parameters
    ----------
    shape : (Y, X) image size in pixels.
    n_nuclei : number of nuclei to place (fewer if the field is too crowded);
        ``None`` draws a count per call, log-uniform in 2..150 per 256x256 pixels, at least 1
        (DSB2018 holds 1 to ~375 nuclei per image).
    seed : seed for ``np.random.default_rng``.
    diameter_range : (min, max) diameter in pixels; ``None`` draws one per call
        (min ~ U[6, 22], max = min x U[1.3, 2.2]).
    vary_appearance : if False, use fixed mid-range appearance settings.
    cluster_fraction : fraction of nuclei placed touching another one; ``None`` draws U[0, 0.5].

    Returns
    -------
    image : (Y, X) float32 in about [0, 1] (dark background, bright nuclei).
    labels : (Y, X) uint16 instance labels 1..n (a partition; later nuclei win overlaps).
    """
    ny, nx = check_shape_2d(shape)
    if n_nuclei is not None and int(n_nuclei) < 0:
        raise InputError(f"n_nuclei must be >= 0, got {n_nuclei}")
    rng = make_rng(seed)
    if n_nuclei is None:
        # at least one: a small field (64 x 64 is 1/16 of 256 x 256) would often draw none
        n_nuclei = max(1, int(round(np.exp(rng.uniform(np.log(2), np.log(150))) * ny * nx / 256**2)))
    if diameter_range is None:
        d_lo = rng.uniform(6, 22)
        diameter_range = (d_lo, d_lo * rng.uniform(1.3, 2.2))
    d_lo, d_hi = check_range(diameter_range, "diameter_range", low=2.0)
    if vary_appearance:
        bg = rng.uniform(0.0, 0.12)
        bright = rng.uniform(0.2, 0.95)
        spread = rng.uniform(1.0, 2.5)
        blur = rng.uniform(0.3, 2.0)
        noise_sd = float(np.exp(rng.uniform(np.log(0.002), np.log(0.03))))
        poisson_scale = rng.choice([0.0, rng.uniform(50, 2000)])
        illum_strength = rng.uniform(0, 0.5)
        gamma = rng.uniform(0.7, 1.4)
        texture_strength = rng.uniform(0.05, 0.5)
        quantise = rng.random() < 0.5
        aspect_hi = rng.uniform(1.1, 2.0)
        irregularity = rng.uniform(0.0, 0.3)
        texture_sigma = rng.uniform(0.8, 3.0)
    else:
        bg, bright, spread, blur, noise_sd, poisson_scale = 0.05, 0.6, 1.5, 1.0, 0.02, 0.0
        illum_strength, gamma, texture_strength, quantise, aspect_hi, irregularity, texture_sigma = 0.2, 1.0, 0.25, False, 1.5, 0.15, 1.6
    if cluster_fraction is None:
        cluster_fraction = rng.uniform(0.0, 0.5)

    nuclei: list[_Nucleus] = []
    # centres and radii of the placed nuclei as arrays (a list rebuilt per try made placing quadratic)
    placed_yxr = np.empty((max(int(n_nuclei), 1), 3))
    for i in range(int(n_nuclei)):
        n = _new_nucleus(rng, 0, 0, (d_lo, d_hi), (1.0, aspect_hi), (bright / spread, bright), irregularity, texture_sigma)
        placed = False
        for _attempt in range(30):
            if nuclei and rng.random() < cluster_fraction:
                m = nuclei[int(rng.integers(len(nuclei)))]
                ang = rng.uniform(0, 2 * np.pi)
                dist = 0.9 * (m.radius + n.radius)
                n.y, n.x = m.y + dist * np.sin(ang), m.x + dist * np.cos(ang)
                factor = 0.8
            else:
                n.y, n.x = rng.uniform(-0.3 * d_hi, ny + 0.3 * d_hi), rng.uniform(-0.3 * d_hi, nx + 0.3 * d_hi)
                factor = 1.0
            if not nuclei:
                placed = True
                break
            others = placed_yxr[: len(nuclei)]
            dist_all = np.hypot(others[:, 0] - n.y, others[:, 1] - n.x)
            if np.all(dist_all >= factor * (others[:, 2] + n.radius)):
                placed = True
                break
        if placed:
            placed_yxr[len(nuclei)] = (n.y, n.x, n.radius)
            nuclei.append(n)

    labels = np.zeros((ny, nx), np.uint16)
    signal = np.zeros((ny, nx), np.float32)
    for i, n in enumerate(nuclei, 1):
        st = _stamp(n.y, n.x, n.a, n.b, n.angle, n.harmonics, (ny, nx))
        if st is None:
            continue
        (sy, sx), inside, rel, u, v = st
        if not inside.any():
            continue
        tex = _texture_at(n.texture, u, v)
        prof = _nucleus_profile(rel, inside, tex, texture_strength)
        # later nuclei win: replace rather than add, so touching nuclei keep separate levels
        signal[sy, sx] = np.where(inside, n.brightness * prof, signal[sy, sx])
        labels[sy, sx][inside] = i
    # relabel 1..n consecutively (some nuclei may be hidden or outside)
    present = np.unique(labels)
    present = present[present > 0]
    lut = np.zeros(len(nuclei) + 1, np.uint16)
    lut[present] = np.arange(1, len(present) + 1, dtype=np.uint16)
    labels = lut[labels]

    image = bg + signal
    if blur > 0:
        image = ndi.gaussian_filter(image, blur)
    image = image * illumination_field((ny, nx), illum_strength, rng)
    image = np.clip(image, 0, None) ** gamma
    if poisson_scale > 0:
        image = rng.poisson(image * poisson_scale) / poisson_scale
    image = image + rng.normal(0, noise_sd, image.shape)
    image = np.clip(image, 0, 1)
    if quantise:
        image = np.round(image * 255) / 255
    return image.astype(np.float32), labels
