"""Auto-labelling of nuclei from a fluorescent nuclear stain ([N]).

Pipeline per frame (every step is a keyword argument of
:func:`autolabel_fluorescence`; ``None`` / ``False`` switches a step off):

1. robust rescale to [0, 1] (percentiles ``normalize_percentiles``; works for
   uint8, uint16 and float images alike);
2. CLAHE (``skimage.exposure.equalize_adapthist``; [N]: block 127, 256 bins,
   max slope 3.0, i.e. ``clip_limit = 3/256`` in scikit-image);
3. Gaussian smoothing (``smooth_sigma`` px, [N]: ~1);
4. local (adaptive) Otsu threshold (``skimage.filters.rank.otsu`` on the
   uint8-quantised image with a square footprint of side ``otsu_window`` px);
   the local threshold is clipped to ``threshold_bounds`` ([N]: [0.05, 1.0],
   in the [0, 1] intensity scale) and, by default, never falls below
   ``global_floor`` x the global Otsu threshold, so that a window that sees only
   background does not turn its noise into objects;
5. fill holes;
6. split clumps: seeded watershed on the (inverted) smoothed intensity, seeds =
   intensity maxima of a more strongly smoothed image at least
   ``seed_min_distance`` px apart ([N]: "split clumps by intensity watershed");
7. size filter: keep objects whose equivalent diameter lies in
   ``diameter_range`` px ([N]: 5-30 px at their pixel size);
8. drop objects that are not brighter than ``min_object_contrast`` x the global
   Otsu threshold of the image before CLAHE (CLAHE turns flat background noise
   into blobs);
9. optionally clear objects touching the image border ([N] does).

About the Otsu window: [N] used 20x20 px for nuclei 5-30 px across. A window
must hold both nucleus and background to find a threshold between them, so it
should be about 2-3 nuclear diameters wide; for DSB2018 (nuclei mostly 10-40 px
across) the default here is 51 px. Use ~20 px for [N]-like images.
"""

from __future__ import annotations

from typing import Any, Generator

import numpy as np
from scipy import ndimage as ndi

from ..errors import InputError
from ..progress import Progress
from ..training.normalize import float32_holds, working_float

DEFAULT_OTSU_WINDOW = 51


#: the smallest frame side (px) auto-labelling takes
MIN_FRAME_SIDE = 8


def _check_frame(frame: np.ndarray) -> np.ndarray:
    if frame.ndim != 2:
        raise InputError(f"expected a 2-D frame, got shape {frame.shape}")
    if frame.size == 0:
        raise InputError("empty image")
    if min(frame.shape) < MIN_FRAME_SIDE:  # batch and the dock as the CLI: said, not 0 nuclei
        raise InputError(f"{frame.shape[0]} x {frame.shape[1]} px is too small to label (at least "
                         f"{MIN_FRAME_SIDE} x {MIN_FRAME_SIDE})")
    f = np.asarray(frame)
    if f.dtype.kind not in "uifb":
        raise InputError(f"unsupported image dtype {f.dtype}")
    if working_float(f.dtype) is np.float64:  # 32/64-bit integers, float64: float32 may not hold them as they are
        f = f.astype(np.float64, copy=False)
        if not np.all(np.isfinite(f)):
            raise InputError("image holds NaN or infinite values")
        low, spread = float(f.min()), float(np.ptp(f))
        if not float32_holds(low, spread):  # a large offset (2**40) over the signal: taken off before float32
            f = f - low
        if spread > 0 and not 1e-30 < spread < 1e30:  # values in units float32 cannot hold (1e-300, 1e300)
            f = (f - f.min()) / spread
    f = f.astype(np.float32, copy=False)
    if not np.all(np.isfinite(f)):
        raise InputError("image holds NaN or infinite values")
    return f


def rescale_intensity_robust(frame: np.ndarray, percentiles: tuple[float, float] | None = (0.1, 99.9)) -> np.ndarray:
    """Rescale a 2-D image to float32 [0, 1] between two percentiles (clipped).

    ``percentiles=None`` uses min and max. A constant image gives all zeros.
    """
    f = _check_frame(frame)
    if percentiles is None:
        lo, hi = float(f.min()), float(f.max())
    else:
        lo, hi = (float(v) for v in np.percentile(f, percentiles))
        if hi <= lo:
            lo, hi = float(f.min()), float(f.max())
    if hi <= lo:
        return np.zeros(f.shape, np.float32)
    return np.clip((f - lo) / (hi - lo), 0, 1).astype(np.float32)


def local_otsu_threshold(image01: np.ndarray, window: int = DEFAULT_OTSU_WINDOW, footprint: str = "square") -> np.ndarray:
    """Local Otsu threshold map of a [0, 1] image (float32, same shape, [0, 1] scale).

    Computed by ``skimage.filters.rank.otsu`` on the image quantised to uint8 with a
    ``window`` x ``window`` square (or a disk of diameter ``window``). A window wider than needed to reach
    the whole image from every pixel gives the threshold of that reach (the same map): its memory grew as
    the window squared (``--otsu-window 20001`` on a 128 x 128 image took 8.8 GB).
    """
    from skimage.filters import rank
    from skimage.morphology import disk, footprint_rectangle

    ny, nx = np.shape(image01)[-2:]
    reach = 2 * int(np.ceil(np.hypot(ny, nx))) + 1 if footprint == "disk" else 2 * max(ny, nx) - 1
    window = max(min(int(window), reach), 3)
    fp = disk(window // 2) if footprint == "disk" else footprint_rectangle((window, window))
    u8 = np.round(np.clip(image01, 0, 1) * 255).astype(np.uint8)
    return rank.otsu(u8, fp).astype(np.float32) / 255.0


def autolabel_frame(frame: np.ndarray, **kwargs: Any) -> np.ndarray:
    """Auto-label one (Y, X) fluorescence frame; see :func:`autolabel_frame_iter` (its options) and
    :func:`autolabel_fluorescence`."""
    from ..progress import drain

    return drain(autolabel_frame_iter(frame, **kwargs))


#: side (px) of the blocks in which :func:`prominent_peaks` gathers objects
PROMINENCE_BLOCK = 512


def prominent_peaks(height: np.ndarray, peaks: np.ndarray, objects: np.ndarray, prominence: float,
                    margin: int = 16, block: int = PROMINENCE_BLOCK) -> np.ndarray:
    """Which of ``peaks`` rise at least ``prominence`` above their surroundings.

    The test of ``skimage.morphology.h_maxima(height, prominence)`` (a peak is kept when it lies on,
    or next to, an h-maximum) made window by window, so the memory is that of a window (h-maxima of a
    whole frame takes ~100 bytes per pixel): the objects whose boxes start in one ``block`` x ``block``
    square are tested together, in the union of their boxes widened by ``margin`` px. A peak's
    surroundings are then its objects and the background within the window. The answer is the whole
    image's (46 of 46 simulated and DSB2018 frames gave identical labels) except where a path that
    stays above a peak's level less ``prominence`` leads out of the window to higher ground (a bright
    ridge through the background): such a peak, dropped by the whole image, is kept (a window keeps
    a superset of the whole image's peaks, never fewer).

    Parameters
    ----------
    height : float array (Y, X), e.g. the smoothed image in [0, 1].
    peaks : int array (N, 2) of (y, x) positions, each inside an object of ``objects``.
    objects : int array (Y, X), the connected objects (0 background).
    prominence : minimal rise (unit of ``height``).

    Returns
    -------
    keep : bool array (N,).
    """
    from skimage.morphology import h_maxima

    keep = np.zeros(len(peaks), bool)
    if not len(peaks):
        return keep
    boxes = ndi.find_objects(objects)
    owner = objects[tuple(peaks.T)] - 1
    ny, nx = height.shape
    groups: dict[tuple[int, int], list[int]] = {}
    for k in np.unique(owner):
        box = boxes[k]
        groups.setdefault((box[0].start // block, box[1].start // block), []).append(int(k))
    for members in groups.values():
        y0 = max(0, min(boxes[k][0].start for k in members) - margin)
        y1 = min(ny, max(boxes[k][0].stop for k in members) + margin)
        x0 = max(0, min(boxes[k][1].start for k in members) - margin)
        x1 = min(nx, max(boxes[k][1].stop for k in members) + margin)
        near = ndi.binary_dilation(h_maxima(height[y0:y1, x0:x1], prominence).astype(bool), iterations=1)
        these = np.flatnonzero(np.isin(owner, members))
        keep[these] = near[peaks[these, 0] - y0, peaks[these, 1] - x0]
    return keep


#: steps of :func:`autolabel_frame_iter`, each a Progress event (Stop takes effect between them)
FRAME_STEPS = ("contrast", "threshold", "seeds", "watershed", "filters")


#: a frame whose brightest smoothed spot (each pixel capped at its 4th brightest neighbour) lies fewer noise sd
#: above its background (10th percentile) holds no nuclei: on pure noise of 4096 x 4096 px it is at most 5.6
#: (Gaussian 4.8, Poisson of 2 counts 5.4, of 0.5 counts 5.6, of 0.1 counts 5.5 on 2048 x 2048; less on smaller
#: frames; a hot pixel or a speck of up to 2 x 2 on it adds nothing); one faint nucleus of 2.5 noise sd gives
#: 7.4-11 (3 px radius) to 16-18 (6 px), simulated nuclei images and the DSB2018 images far more, a confluent
#: field (nuclei over three quarters of it) hundreds
MIN_SIGNAL_ABOVE_NOISE = 7.0
#: an object removed as too large that covers more than this share of its frame and touches at least three of
#: its edges is most likely the background of an inverted image (dark nuclei on a bright field): said with
#: the size warning (one large nucleus in a crop touches no edge)
FRAME_FILLING = 0.25
#: the percentile of a smoothed frame taken for its background (the median lies in the nuclei of a dense field)
BACKGROUND_PERCENTILE = 10.0


def _capped(data: np.ndarray) -> np.ndarray:
    """Each pixel of ``data`` capped at the 4th brightest of its 8 neighbours: a camera's hot pixel, or a speck
    of a few (a pair, a 2 x 2, a short line), goes; a nucleus's inside (each pixel amid bright ones) stays."""
    ring = np.ones((3, 3), bool)
    ring[1, 1] = False
    return np.minimum(data, ndi.rank_filter(data, rank=-4, footprint=ring))


#: at most this many of the brightest raw spots are looked at one by one before :func:`signal_above_noise`
#: caps the whole frame (pure noise: many spots just above the threshold)
GATE_SPOTS = 24


def signal_above_noise(frame: np.ndarray, sigma: float = 2.0) -> float:
    """How far the brightest spot of ``frame`` (Y, X), each pixel capped at the 4th brightest of its
    neighbours (hot pixels and specks of a few go, :func:`_capped`) and smoothed by a Gaussian of ``sigma``
    px, lies above its background (:data:`BACKGROUND_PERCENTILE`), in sd of the smoothed noise: the pixel
    noise from neighbour differences (their MAD, its whole steps spread out for integer data, whose MAD is
    quantised), x 1 / (2 sqrt(pi) sigma). inf when the noise is 0 (a noise-free image), 0 for a constant one.

    The brightest spots of the plain smoothed frame (capping only lowers a frame) are capped in windows
    around them, brightest first, until one reaches :data:`MIN_SIGNAL_ABOVE_NOISE` (its value is returned:
    one window settles a frame of nuclei) or none is left that could; a frame of many spots near the
    threshold (pure noise) is capped whole. So the gate's answer is exact; a value above the threshold is
    that of the brightest spot of the plain frame that reaches it, not always the frame's highest."""
    from .ccd import robust_noise

    data = _check_frame(np.asarray(frame))
    steps = np.diff(data[:: max(1, data.shape[0] // 512)], axis=1).ravel()
    noise = robust_noise(steps) / np.sqrt(2) if steps.size else 0.0
    smooth = ndi.gaussian_filter(data, sigma)
    # the background from the frame as it is (capping lowers noise's percentiles more than its peak)
    background = float(np.percentile(smooth[:: max(1, data.shape[0] // 1024)], BACKGROUND_PERCENTILE))
    if noise <= 0:  # a noise-free frame: the whole frame capped
        return float("inf") if float(ndi.gaussian_filter(_capped(data), sigma).max()) > background else 0.0
    unit = noise / (2 * np.sqrt(np.pi) * sigma)
    needed = background + MIN_SIGNAL_ABOVE_NOISE * unit
    reach = int(4 * sigma + 0.5) + 2  # a Gaussian's reach (scipy truncates at 4 sigma) and the cap's 1 px
    unseen = smooth.copy()
    best = -np.inf
    for _ in range(GATE_SPOTS):
        at = int(np.argmax(unseen))
        top = float(unseen.flat[at])
        if top < needed:  # nothing left that could open the gate (capped <= plain)
            return max(0.0, (max(best, top) - background) / unit)
        y, x = divmod(at, data.shape[1])
        y0, x0 = max(0, y - 2 * reach), max(0, x - 2 * reach)
        window = ndi.gaussian_filter(_capped(data[y0:y + 2 * reach + 1, x0:x + 2 * reach + 1]), sigma)
        inner = window[y - reach - y0 if y - reach > y0 else 0:y + reach + 1 - y0,
                       x - reach - x0 if x - reach > x0 else 0:x + reach + 1 - x0]
        best = max(best, float(inner.max()))
        if best >= needed:
            return (best - background) / unit
        unseen[max(0, y - reach):y + reach + 1, max(0, x - reach):x + reach + 1] = -np.inf
    peak = float(ndi.gaussian_filter(_capped(data), sigma).max())  # many spots near the threshold: all capped
    return max(0.0, (peak - background) / unit)


def inverted_note(sizes: dict) -> str:
    """A sentence for the size warning when objects removed as too large fill most of their frame
    (``sizes['frame_filling']``, see :func:`autolabel_frame_iter`); "" otherwise."""
    n = int(sizes.get("frame_filling", 0))
    if not n:
        return ""
    return (f" In {n} frame(s) such an object covers over a quarter of the frame: is the image inverted (dark "
            "nuclei on a bright background)? Invert it first; raising the maximum diameter will not help.")


def autolabel_frame_iter(
    frame: np.ndarray,
    clahe_kernel: int | None = 127,
    clahe_bins: int = 256,
    clahe_clip: float = 3.0 / 256,
    smooth_sigma: float | None = 1.0,
    otsu_window: int | None = DEFAULT_OTSU_WINDOW,
    otsu_footprint: str = "square",
    threshold_bounds: tuple[float, float] = (0.05, 1.0),
    global_floor: float | None = 0.5,
    diameter_range: tuple[float, float] | None = (5.0, 30.0),
    fill_holes: bool = True,
    split_clumps: bool = True,
    seed_sigma: float | None = None,
    seed_min_distance: int | None = None,
    seed_prominence: float | None = 0.05,
    clear_border: bool = True,
    min_object_contrast: float | None = 0.5,
    normalize_percentiles: tuple[float, float] | None = (0.1, 99.9),
    size_report: dict | None = None,
    too_large_value: int | None = None,
) -> Generator[Progress, None, np.ndarray]:
    """Auto-label one (Y, X) fluorescence frame; see :func:`autolabel_fluorescence`. Yields a
    :class:`Progress` before each of its steps (:data:`FRAME_STEPS`; a large frame takes tens of
    seconds per step), returns the labels.

    ``size_report``, when given, is a dict that the diameter filter adds to (so one dict can
    gather a stack's frames): ``too_small`` and ``too_large`` count the objects it removed,
    ``largest_removed_px`` is the largest equivalent diameter (px) among those too large;
    ``frame_filling`` counts the frames where one of those covers over :data:`FRAME_FILLING` of the frame
    and touches three of its edges (an inverted image's background);
    ``no_signal`` counts the frames labelled empty because nothing in them stands out of their
    noise (:func:`signal_above_noise` under :data:`MIN_SIGNAL_ABOVE_NOISE`: pure noise, an
    empty field, a constant frame).
    ``too_large_value`` (e.g. -1, training's "not annotated"): the pixels of objects above the
    maximum diameter, and with ``clear_border`` of those touching the image edge, get this value
    instead of 0, and the labels come as int32; they may be nuclei of another size, clumps or cut
    nuclei, which a network should not learn as background."""
    if clahe_kernel and not 0 < float(clahe_clip) <= 1:  # scikit-image reads 0 as no limit (the strongest)
        raise InputError(f"the CLAHE clip limit must lie in (0, 1] (higher: stronger local contrast), got {clahe_clip}")
    if diameter_range and not 0 < float(diameter_range[0]) <= float(diameter_range[1]):
        raise InputError(f"the nucleus diameter range must run from a minimum > 0 up to a maximum >= it, "
                         f"got {diameter_range[0]} to {diameter_range[1]} px")
    if otsu_footprint not in ("square", "disk"):  # (anything else was taken for a square)
        raise InputError(f"the Otsu footprint must be 'square' or 'disk', got {otsu_footprint!r}")
    if not 0 <= float(threshold_bounds[0]) <= float(threshold_bounds[1]) <= 1:  # (reversed: 0 objects, no word)
        raise InputError(f"the threshold bounds must run low to high within [0, 1], got {tuple(threshold_bounds)}")
    frame = _check_frame(np.asarray(frame))
    ny, nx = frame.shape
    for name, sigma in (("smoothing", smooth_sigma), ("seed smoothing", seed_sigma)):
        if sigma is not None and not 0 <= float(sigma) <= max(ny, nx):  # (a huge one ran for hours)
            raise InputError(f"the {name} sigma must lie from 0 to the frame's side ({max(ny, nx)} px), got {sigma}")
    if signal_above_noise(frame) < MIN_SIGNAL_ABOVE_NOISE:
        # pure noise or an empty field: the stretch below would make its noise look like nuclei
        if size_report is not None:
            size_report["no_signal"] = size_report.get("no_signal", 0) + 1
        return np.zeros((ny, nx), np.uint16)
    img = rescale_intensity_robust(frame, normalize_percentiles)
    original = img
    if img.max() <= 0:
        return np.zeros((ny, nx), np.uint16)
    yield Progress(0, len(FRAME_STEPS), "contrast")
    if clahe_kernel:
        from skimage.exposure import equalize_adapthist

        kernel = max(3, min(int(clahe_kernel), ny, nx))
        img = equalize_adapthist(img, kernel_size=kernel, clip_limit=clahe_clip, nbins=int(clahe_bins)).astype(np.float32)
    smooth = ndi.gaussian_filter(img, smooth_sigma) if smooth_sigma else img
    yield Progress(1, len(FRAME_STEPS), "threshold")
    lo, hi = float(threshold_bounds[0]), float(threshold_bounds[1])
    if otsu_window:
        thr = local_otsu_threshold(smooth, otsu_window, otsu_footprint)
    else:
        from skimage.filters import threshold_otsu

        thr = np.full(smooth.shape, threshold_otsu(smooth), np.float32)
    if global_floor:
        from skimage.filters import threshold_otsu

        lo = max(lo, float(global_floor) * float(threshold_otsu(smooth)))
    thr = np.clip(thr, lo, max(hi, lo))
    mask = smooth > thr
    del thr
    if fill_holes:
        mask = ndi.binary_fill_holes(mask)
    d_lo = float(diameter_range[0]) if diameter_range else 2.0
    # drop specks well below the smallest nucleus before splitting (cheap and removes noise seeds)
    min_area = max(1, int(np.pi * (d_lo / 2) ** 2 / 4))
    labels, n = ndi.label(mask)
    if n:
        areas = np.bincount(labels.ravel())
        small = areas < min_area
        small[0] = False
        mask[small[labels]] = False
    del labels
    if split_clumps and mask.any():
        from skimage.feature import peak_local_max
        from skimage.segmentation import watershed

        yield Progress(2, len(FRAME_STEPS), "seeds")
        s_sigma = seed_sigma if seed_sigma is not None else max(2.0, d_lo / 4)
        seed_img = ndi.gaussian_filter(img, s_sigma)
        min_dist = int(seed_min_distance) if seed_min_distance is not None else max(3, int(round(d_lo / 2)))
        comp, _ = ndi.label(mask)
        peaks = peak_local_max(seed_img, min_distance=min_dist, labels=comp, exclude_border=False)
        if seed_prominence and len(peaks):
            # keep maxima that rise at least ``seed_prominence`` (in [0, 1] units) above their surroundings
            peaks = peaks[prominent_peaks(seed_img, peaks, comp, float(seed_prominence),
                                          margin=int(np.ceil(4 * s_sigma)) + min_dist)]
        markers = np.zeros(mask.shape, np.int32)
        if len(peaks):
            markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
        # components without a seed keep one seed at their maximum
        have = np.unique(comp[tuple(peaks.T)]) if len(peaks) else np.zeros(0, int)
        missing = np.setdiff1d(np.unique(comp[mask]), have)
        if len(missing):
            pos = ndi.maximum_position(seed_img, comp, missing)
            for k, p in enumerate(pos):
                markers[p] = len(peaks) + 1 + k
        del comp, seed_img
        yield Progress(3, len(FRAME_STEPS), "watershed")
        labels = watershed(-smooth, markers, mask=mask)
        del markers
    else:
        labels, _ = ndi.label(mask)
    yield Progress(4, len(FRAME_STEPS), "filters")
    if min_object_contrast and labels.max():
        from skimage.filters import threshold_otsu

        # CLAHE stretches background noise; an object must also stand out in the original image
        base = ndi.gaussian_filter(original, smooth_sigma) if smooth_sigma else original
        limit = float(min_object_contrast) * float(threshold_otsu(base))
        n_lab = int(labels.max())
        means = np.asarray(ndi.mean(base, labels, np.arange(1, n_lab + 1)))
        dim = np.zeros(n_lab + 1, bool)
        dim[1:] = means < limit
        labels[dim[labels]] = 0
    if diameter_range and labels.max():
        areas = np.bincount(labels.ravel())
        diam = np.sqrt(4 * areas / np.pi)
        small, large = diam < diameter_range[0], diam > diameter_range[1]
        small[0] = large[0] = False
        if size_report is not None:
            size_report["too_small"] = size_report.get("too_small", 0) + int(small.sum())
            size_report["too_large"] = size_report.get("too_large", 0) + int(large.sum())
            if large.any():
                size_report["largest_removed_px"] = max(size_report.get("largest_removed_px", 0.0),
                                                        round(float(diam[large].max()), 1))
                biggest = int(np.flatnonzero(large)[np.argmax(areas[large])])
                sides = sum(bool((edge == biggest).any()) for edge in (labels[0], labels[-1], labels[:, 0], labels[:, -1]))
                if areas[biggest] > FRAME_FILLING * labels.size and sides >= 3:  # an inverted image's background
                    size_report["frame_filling"] = size_report.get("frame_filling", 0) + 1
        large_pixels = large[labels] if too_large_value is not None else None
        labels[(small | large)[labels]] = 0
    else:
        large_pixels = None
    cut_pixels = None
    if clear_border:
        from skimage.segmentation import clear_border as _clear

        before = labels
        labels = _clear(labels)
        if too_large_value is not None:  # nuclei cut by the image edge: not annotated, not background (a network
            cut_pixels = (before > 0) & (labels == 0)  # trained on the tiles learned 9 visible nuclei as background)
            if size_report is not None:
                size_report["cut_by_edge"] = size_report.get("cut_by_edge", 0) + int(np.unique(before[cut_pixels]).size)
    from skimage.segmentation import relabel_sequential

    labels, _, _ = relabel_sequential(labels)
    if too_large_value is not None:
        labels = labels.astype(np.int32)
        for pixels in (large_pixels, cut_pixels):
            if pixels is not None:
                labels[pixels] = int(too_large_value)
        return labels
    from ..measure.labels import label_dtype

    return labels.astype(label_dtype(labels.max()))


def autolabel_fluorescence_iter(image, **kwargs) -> Generator[Progress, None, np.ndarray]:
    """Generator form of :func:`autolabel_fluorescence`: yields one :class:`Progress` per frame, returns the labels."""
    arr = image if hasattr(image, "shape") else np.asarray(image)  # a list of frames: an array
    ndim = getattr(arr, "ndim", None)
    if ndim not in (2, 3):
        raise InputError(f"expected a (Y, X) image or a (T, Y, X) stack, got shape {getattr(arr, 'shape', None)}")
    if ndim == 3 and arr.shape[-1] in (3, 4) and arr.shape[0] > 4:  # (it said "128 x 3 px is too small")
        raise InputError(f"image of shape {tuple(arr.shape)} looks like RGB(A) (Y, X, C): give the stain's channel "
                         "(one grey image)")
    if ndim == 2:
        out = yield from autolabel_frame_iter(np.asarray(arr), **kwargs)
        yield Progress(1, 1, "auto-labelled 1 frame")
        return out
    n = arr.shape[0]
    frames = []
    for t in range(n):
        steps = autolabel_frame_iter(np.asarray(arr[t]), **kwargs)
        while True:  # each frame's steps as progress within the stack (Stop between them)
            try:
                step = next(steps)
            except StopIteration as done:
                frames.append(done.value)
                break
            yield Progress(t, n, f"frame {t + 1}/{n}: {step.message}")
        yield Progress(t + 1, n, f"frame {t + 1}/{n}: {int(frames[-1].max())} nuclei")
    dtype = np.result_type(*[f.dtype for f in frames])  # uint16, uint32 or int32 (too_large_value)
    # filled frame by frame, each let go once copied: the frames, their converted copies and the stack were all
    # alive at once (3x the labels' memory)
    if not frames:  # a stack of no frames: no labels
        return np.zeros(arr.shape, np.uint16)
    out = np.empty((n, *frames[0].shape), dtype)
    for t in range(n):
        out[t] = frames[t]
        frames[t] = None
    return out


def autolabel_fluorescence(
    image,
    clahe_kernel: int | None = 127,
    clahe_bins: int = 256,
    clahe_clip: float = 3.0 / 256,
    smooth_sigma: float | None = 1.0,
    otsu_window: int | None = DEFAULT_OTSU_WINDOW,
    otsu_footprint: str = "square",
    threshold_bounds: tuple[float, float] = (0.05, 1.0),
    global_floor: float | None = 0.5,
    diameter_range: tuple[float, float] | None = (5.0, 30.0),
    fill_holes: bool = True,
    split_clumps: bool = True,
    seed_sigma: float | None = None,
    seed_min_distance: int | None = None,
    seed_prominence: float | None = 0.05,
    clear_border: bool = True,
    min_object_contrast: float | None = 0.5,
    normalize_percentiles: tuple[float, float] | None = (0.1, 99.9),
) -> np.ndarray:
    """Instance labels of nuclei from a fluorescent nuclear-stain image ([N]).

    Parameters
    ----------
    image : (Y, X) or (T, Y, X) array, uint8 / uint16 / float (any range; bright
        nuclei on a dark background). Stacks are labelled frame by frame.
    clahe_kernel : CLAHE block size in px ([N]: 127); None skips CLAHE. Clipped to the image size.
    clahe_bins : CLAHE histogram bins ([N]: 256).
    clahe_clip : CLAHE clip limit in scikit-image units ([N] max slope 3.0 -> 3/256).
    smooth_sigma : Gaussian sigma in px before thresholding ([N]: ~1); None: no smoothing.
    otsu_window : side in px of the local Otsu window (default 51 px, for
        DSB2018-like nuclei 10-40 px across; [N] used 20 for 5-30 px nuclei);
        None: one global Otsu threshold.
    otsu_footprint : ``"square"`` or ``"disk"``.
    threshold_bounds : (low, high) clip of the local threshold in the [0, 1]
        intensity scale after CLAHE ([N]: 0.05, 1.0).
    global_floor : the local threshold never drops below this fraction of the
        global Otsu threshold (our addition; suppresses noise in windows that
        hold only background). None / 0 disables it.
    diameter_range : (min, max) equivalent diameter in px of kept objects ([N]:
        5-30 px); None keeps all.
    fill_holes : fill holes in the foreground mask.
    split_clumps : split touching nuclei with a seeded intensity watershed.
    seed_sigma : smoothing (px) of the image in which seeds (maxima) are found;
        None: ``max(2, min_diameter / 4)``.
    seed_min_distance : minimum distance in px between seeds; None: ``max(3, min_diameter / 2)``.
    seed_prominence : a seed must be an h-maximum of this height (in the [0, 1]
        intensity scale after CLAHE); stops textured nuclei from being cut into
        pieces. None / 0: every local maximum is a seed.
    clear_border : drop objects touching the image border ([N] does; switch off
        when labels should cover the whole field).
    min_object_contrast : drop objects whose mean intensity in the smoothed original
        (before CLAHE, rescaled to [0, 1]) is below this fraction of that image's global
        Otsu threshold (our addition: CLAHE turns flat background noise into blobs that
        pass the local threshold). None / 0 disables it.
    normalize_percentiles : percentiles mapped to 0 and 1 before CLAHE; None: min / max.

    Returns
    -------
    labels : (Y, X) or (T, Y, X) uint16 (uint32 if > 65534 objects in a frame)
        instance labels, 0 = background, 1..n per frame.

    Raises
    ------
    InputError for a wrong dimensionality, NaN/inf or a non-numeric dtype.
    """
    kwargs = {k: v for k, v in locals().items() if k != "image"}
    gen = autolabel_fluorescence_iter(image, **kwargs)
    while True:
        try:
            next(gen)
        except StopIteration as stop:
            return stop.value
