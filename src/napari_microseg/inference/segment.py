"""Segment images with a trained model: normalise, tiled prediction, post-processing, measurement.

:func:`segment_image` is a generator (yields :class:`~napari_microseg.progress.Progress`,
returns a :class:`SegmentResult`) so that a widget can run it in a thread and
the CLI can drive it with a text bar; :func:`segment` is the plain-call form.

Frames of a (T, Y, X) stack are processed one at a time: memory holds one
frame's probabilities (float32, or float16 for frames above
``PROBABILITY_FLOAT16_PIXELS``) plus one row band of tiles, so stacks and
zarr/dask images of any length work; label frames are written into ``out``
(numpy, or a zarr array for huge data) as they are finished.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Callable, Generator

import numpy as np
import pandas as pd

from ..defaults import DEFAULT_MIN_SIZE, DEFAULT_OVERLAP, DEFAULT_TILE  # noqa: F401 (re-exported)
from ..errors import InputError
from ..progress import Progress
from . import postprocess, scale
from .tiling import count_tiles, fitted_tile, predict_tiled_iter, resolve_overlap

#: frames with more pixels than this keep probabilities as float16
PROBABILITY_FLOAT16_PIXELS = 4096 * 4096
#: watershed settings for a model with a distance head whose file holds no tuned ones (units of the 0..1 map)
DISTANCE_HEAD_DEFAULTS = {"seed_method": "network", "distance_sigma": 1.0, "seed_dynamics": 0.1}
#: percentile statistics are computed on at most about this many pixels per frame (strided subsample)
NORMALIZATION_SAMPLE_PIXELS = 4_000_000


@dataclass
class SegmentResult:
    """Result of :func:`segment_image`.

    Attributes
    ----------
    labels : (Y, X) or (T, Y, X) uint16/uint32 instance labels (binary and
        three_class models) or uint8 class map (multiclass models); numpy, or
        the zarr array passed as ``out``.
    probabilities : (K, Y, X) or (T, K, Y, X) float32 network output, or None
        when not kept (``keep_probabilities=False`` or a huge input).
    objects : per-object table (``t, label, y, x, area, ...``; multiclass adds
        ``class_id`` and ``class``, its name).
    counts : per-frame counts (``t, count``; multiclass adds ``count_<class>``
        and ``fraction_<class>``; binary/three_class add ``count_by_area``).
    output_mode : the model's output mode.
    class_names : class names from the model config.
    settings : the parameters used (tile, overlap, device, sizes ...), to store with results.
    """

    labels: Any
    probabilities: Any
    objects: pd.DataFrame
    counts: pd.DataFrame
    output_mode: str = "binary"
    class_names: list = field(default_factory=list)
    settings: dict = field(default_factory=dict)


def _activation(output_mode: str) -> Callable:
    import torch

    if output_mode == "binary":
        return torch.sigmoid
    return lambda x: torch.softmax(x, dim=1)


def make_predict_fn(loaded: Any, optimize: bool = True, precision: str = "auto") -> Callable[[np.ndarray], np.ndarray]:
    """``predict_fn(batch (B,1,H,W) float32 normalised) -> (B,K,H,W) float32 probabilities`` for a loaded model.

    Uses ``napari_microseg.training.predict.predict_patch_batch`` when present
    (with ``optimize``: the cached inference copy of the network, batch norm
    folded, channels_last on CPU); otherwise runs the network under
    ``torch.inference_mode`` on the model's device and applies sigmoid (binary)
    or softmax.
    """
    try:
        from ..training.predict import predict_patch_batch
    except ImportError:
        predict_patch_batch = None
    if predict_patch_batch is not None:
        def fn(batch: np.ndarray) -> np.ndarray:
            out = predict_patch_batch(loaded, batch, optimize=optimize, precision=precision)
            if hasattr(out, "detach"):
                out = out.detach().cpu().numpy()
            return np.asarray(out, dtype=np.float32)
        return fn

    import torch

    act = _activation(loaded.output_mode)
    device = getattr(loaded, "device", "cpu")

    def fn(batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(batch)).to(device)
            return act(loaded.model(x)).float().cpu().numpy()
    return fn


class TapLevelledFrames:
    """Read-only view of a CCD frame or (T, Y, X) stack whose readout taps are levelled on access.

    Each frame is passed through :func:`napari_microseg.autolabel.ccd.level_taps`
    (every tap brought to the median tap pedestal, ADC) when first indexed; the
    last frame is cached. Used for models whose normalisation asks for it
    (``{"kind": "pedestal", "level_taps": true}``), so a tap whose pedestal
    sits hundreds of ADC above the others is not taken for a glowing region.
    """

    def __init__(self, image: Any):
        self._image = image
        self.shape = tuple(int(s) for s in image.shape)
        self.ndim = len(self.shape)
        self.dtype = np.dtype(np.float32)
        self._cached: tuple[int, np.ndarray] | None = None

    def _frame(self, t: int) -> np.ndarray:
        from ..autolabel.ccd import level_taps

        if self._cached is None or self._cached[0] != t:
            raw = self._image[t] if self.ndim == 3 else self._image
            raw = raw.compute() if hasattr(raw, "compute") else raw
            self._cached = (t, level_taps(np.asarray(raw, dtype=np.float32)))
        return self._cached[1]

    def __getitem__(self, key: Any) -> np.ndarray:
        if self.ndim == 3:
            if isinstance(key, tuple):
                return self._frame(int(key[0]))[key[1:]]
            return self._frame(int(key))
        return self._frame(0)[key]

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        data = np.stack([self._frame(t) for t in range(self.shape[0])]) if self.ndim == 3 else self._frame(0)
        return data if dtype is None else data.astype(dtype)


def flip_averaged(fn: Callable[[np.ndarray], np.ndarray]) -> Callable[[np.ndarray], np.ndarray]:
    """Wrap a ``(B,1,H,W) -> (B,K,H,W)`` predictor so it returns the mean over the four flips
    (none, vertical, horizontal, both) of each input, each flipped back (test-time augmentation)."""

    def averaged(batch: np.ndarray) -> np.ndarray:
        total = None
        for axes in ((), (-2,), (-1,), (-2, -1)):
            flipped = np.flip(batch, axis=axes) if axes else batch
            out = np.asarray(fn(np.ascontiguousarray(flipped)), dtype=np.float32)
            out = np.flip(out, axis=axes) if axes else out
            total = out.copy() if total is None else total + out
        return total / 4.0

    return averaged


def tuned_postprocess(loaded: Any) -> dict:
    """Watershed settings stored in the model file (``config["postprocess"]``, see
    :mod:`napari_microseg.inference.tune`): ``threshold`` and :data:`THREE_CLASS_OPTIONS`; notes such as
    ``tuned_on`` are dropped, and so is a size (``min_size``: a run setting; one stored by an earlier
    version made the model fail every segmentation)."""
    stored = (getattr(loaded, "config", None) or {}).get("postprocess") or {}
    return {k: v for k, v in stored.items() if k in THREE_CLASS_OPTIONS | {"threshold"}}


def n_outputs(loaded: Any) -> int:
    """Number of output channels of a loaded model (from its config)."""
    model_cfg = loaded.config.get("model", {})
    n = model_cfg.get("n_classes", loaded.config.get("n_classes"))
    if n is None:
        n = {"binary": 1, "three_class": 3}.get(loaded.output_mode)
    if n is None:
        raise InputError("model config does not state the number of output classes")
    return int(n)


def _sample_frame(frame: Any, max_pixels: int = NORMALIZATION_SAMPLE_PIXELS) -> np.ndarray:
    from ..training.normalize import working_float

    h, w = frame.shape[-2:]
    step = int(np.ceil(np.sqrt(h * w / max_pixels))) if h * w > max_pixels else 1
    sample = frame[::step, ::step]
    if hasattr(sample, "compute"):
        sample = sample.compute()
    sample = np.asarray(sample)
    if sample.dtype.kind == "f" and sample.dtype.itemsize > 4:  # float64 beyond float32: inf after the cast
        finite = sample[np.isfinite(sample)]
        if finite.size and float(np.abs(finite).max()) > float(np.finfo(np.float32).max):
            raise InputError(f"the image holds values up to {float(np.abs(finite).max()):.3g}, beyond what the network's "
                             "float32 arithmetic holds (3.4e38): scale it down (e.g. divide by its maximum) first")
    return sample.astype(working_float(sample.dtype))


def _non_finite_message(t: int, stack: bool = True) -> str:
    """The refusal of a frame ``t`` of a stack (or of a 2-D image: ``stack`` False, said as "the image": a frame
    of a Zarr stack segmented alone by ``batch`` was called frame 0 whatever its number)."""
    return (f"{f'frame {t}' if stack else 'the image'} contains NaN or infinite values (masked, saturated or missing pixels?): replace them with a "
            "finite value, e.g. the background level, before segmenting")


def make_band_transform(image: Any, spec: dict, limits_in: tuple[float, float] | None = None
                        ) -> tuple[Callable[[np.ndarray, int], np.ndarray], dict]:
    """Band transform applying normalisation ``spec`` with statistics of the WHOLE frame; ``limits_in``:
    (low, high) normalised values the network is given at most (:func:`~..training.normalize.input_limits`).

    Percentile / min-max limits are computed per frame on the full frame (or a
    strided subsample of about ``NORMALIZATION_SAMPLE_PIXELS`` pixels for huge
    frames), exactly as training normalised whole images, and then applied to
    each band; statistics are never taken per tile (tiles would disagree).

    Returns the transform and a dict ``{t: (offset, scale)}`` of the limits used
    (filled lazily, one frame at a time).
    """
    from ..training.normalize import clip_bright, make_normalization_spec, normalization_limits, normalise_values

    spec = make_normalization_spec(spec)
    limits: dict[int, tuple[float, float]] = {}
    stack = image.ndim == 3
    per_frame = spec["kind"] not in ("fixed", "none")

    def transform(band: np.ndarray, t: int) -> np.ndarray:
        if t not in limits:
            sample = _sample_frame(image[t] if stack else image) if per_frame else np.zeros((1, 1), np.float32)
            if not np.all(np.isfinite(sample)):
                raise InputError(_non_finite_message(t, stack))
            limits.clear()  # only the current frame is needed
            limits[t] = normalization_limits(sample, spec)
        offset, scale = limits[t]
        x = np.asarray(band)
        if x.dtype.kind == "f" and not np.all(np.isfinite(x)):
            raise InputError(_non_finite_message(t, stack))
        out = clip_bright(normalise_values(x, offset, scale), spec)  # lone hot pixels cut
        if limits_in is not None:  # saturated or blank CCD pixels: as bright / dark as the model knows, no further
            np.clip(out, limits_in[0], limits_in[1], out=out)
        return out

    return transform, limits


def _resolve_loaded(model: Any, device: str) -> Any:
    if isinstance(model, (str, os.PathLike)):
        from ..io.models import load_model

        return load_model(model, device=device, segmentation=True)
    from ..io.models import check_segmentation_config

    check_segmentation_config(getattr(model, "config", {}) or {}, str(getattr(model, "path", None) or "model"))
    return model


#: pixels of one unit of ``batch_size`` (a 256 x 256 tile)
BATCH_TILE_PIXELS = 256 * 256

#: smallest height / width (px) segmented: below it the network sees only padding and invents objects
MIN_IMAGE_SIDE = 8
#: side (px) of the central window of the first frame that the intensity-scale check reads
SCALE_CHECK_CROP = 1024


def _check_input(image: Any) -> tuple[int, ...]:
    shape = tuple(int(s) for s in image.shape)
    if len(shape) not in (2, 3):
        raise InputError(f"expected a 2D (Y,X) image or a (T,Y,X) stack, got shape {shape}")
    if min(shape) == 0:
        raise InputError(f"image is empty (shape {shape})")
    # colour first: its 3-4 samples last are under the smallest side, which said "too small" of any RGB image
    if len(shape) == 3 and shape[-1] in (3, 4) and shape[0] > 4:
        raise InputError(f"image of shape {shape} looks like RGB(A) (Y,X,C); convert it to one grey channel first")
    if min(shape[-2:]) < MIN_IMAGE_SIDE:
        raise InputError(f"image of shape {shape} is too small to segment: Y and X must be at least {MIN_IMAGE_SIDE} px")
    dtype = np.dtype(image.dtype)
    if not (np.issubdtype(dtype, np.number) or dtype == bool) or np.issubdtype(dtype, np.complexfloating):
        raise InputError(f"image dtype {dtype} is not a real-valued image")
    return shape


#: watershed settings a three-class model's post-processing takes (``postprocess_options``)
THREE_CLASS_OPTIONS = {"seed_threshold", "seed_method", "distance_sigma", "seed_dynamics", "seed_erosion",
                       "min_seed_size", "min_mean_interior", "grow_small_below"}


def _check_tiling(tile: Any, overlap: Any, batch_size: Any) -> int:
    """The tile side in px as an int, after one-line checks of tile, overlap and batch size."""
    if isinstance(tile, bool) or not isinstance(tile, (int, np.integer, float)) or tile != int(tile) or tile < 16:
        raise InputError(f"tile must be a whole number of pixels >= 16, got {tile!r}")
    if isinstance(overlap, bool) or not isinstance(overlap, (int, np.integer, float)) or not np.isfinite(overlap) \
            or overlap < 0:
        raise InputError(f"overlap must be >= 0 (pixels, or a fraction of the tile below 1), got {overlap!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise InputError(f"batch_size must be a whole number >= 1, got {batch_size!r}")
    return int(tile)


def _check_fits(labels: np.ndarray, dtype: Any, frame: int | None) -> None:
    """Refuse to write labels into an ``out`` array whose integer dtype would wrap them."""
    dtype = np.dtype(dtype)
    top = int(labels.max()) if labels.size else 0
    if dtype.kind in "iub" and top > (1 if dtype.kind == "b" else np.iinfo(dtype).max):
        where = f" in frame {frame}" if frame is not None else ""
        raise InputError(f"label {top}{where} does not fit the output array's dtype {dtype}: "
                         f"give an output array of dtype uint32")


def segment_image(
    model: Any,
    image: Any,
    tile: int | None = None,
    overlap: int | float = DEFAULT_OVERLAP,
    batch_size: int = 4,
    device: str = "auto",
    threshold: float | None = None,
    min_size: int = DEFAULT_MIN_SIZE,
    max_size: int | None = None,
    fill_holes: bool = True,
    remove_border: bool = False,
    out: Any = None,
    keep_probabilities: bool | None = None,
    measure: bool = True,
    predict_fn: Callable | None = None,
    postprocess_options: dict | None = None,
    test_time_augmentation: bool = False,
    precision: str = "auto",
    diameter: float | str | None = None,
) -> Generator[Progress, None, SegmentResult]:
    """Segment a 2D image or a (T, Y, X) stack; generator yielding progress, returning a :class:`SegmentResult`.

    Parameters
    ----------
    model : LoadedModel or path to a model file
        A path is loaded on ``device``. The stored normalisation spec is
        applied with whole-frame statistics.
    image : array-like (Y, X) or (T, Y, X)
        numpy, zarr or dask, any real dtype.
    tile : int, optional
        Largest tile side in pixels; default: the model's training ``patch_size``
        rounded up to a multiple of 32, at least 512. Each frame is covered by as
        many tiles as this size needs, each shrunk to spread them evenly
        (:func:`tiling.fitted_tile`: a 512 x 512 frame is one tile, a 1024 x 1024
        frame nine of 368 x 368), so no work goes into padding.
    overlap : int or float
        Tile overlap in pixels, or a fraction of ``tile`` if < 1 (default 32 px).
    batch_size : network calls take the pixels of this many 256 x 256 tiles
        (default 4: one 512 x 512 tile, four 256 x 256 ones).
    device : "auto", "cpu", "cuda", ... (used when ``model`` is a path).
    threshold : foreground probability cut (binary and three_class); default:
        the model's tuned value (``config["postprocess"]["threshold"]``), else 0.5.
    min_size, max_size : object area limits in pixels (binary/three_class);
        default min 8 px, no max.
    fill_holes : fill holes inside objects.
    remove_border : drop objects touching the image border.
    out : array-like, optional
        Where to write labels, same (Y, X) / (T, Y, X) shape as ``image``
        (e.g. a zarr array for huge inputs); allocated in memory when None.
    keep_probabilities : return the probability maps; default True when the
        whole map is below 64 M values, else False.
    measure : compute the objects and counts tables.
    predict_fn : override the network call (``(B,1,h,w) -> (B,K,h,w)``), for tests.
    test_time_augmentation : average the probabilities over the four flips of
        each tile (4x the network time; smoother boundaries).
    precision : network arithmetic, ``"auto"`` (bfloat16 on CUDA and on CPUs that
        compute it natively, such as AMX: ~3x faster, same labels but for a few
        boundary pixels), ``"float32"`` or ``"bfloat16"``.
    postprocess_options : three_class watershed settings (``seed_threshold``,
        ``seed_method``, ``distance_sigma``, ``seed_dynamics``, ...; see
        :func:`postprocess.three_class_to_labels`); they override the values
        tuned for the model (``config["postprocess"]``). For CCD class models:
        ``shape_rules=True`` (hot pixels must be straight lines; compact hot
        blobs become cluster) and ``max_cluster_size`` (px; larger cluster
        components become background), see :func:`postprocess.ccd_shape_rules`;
        ``hot_repeats=True`` for a (T, Y, X) stack of exposures of one sensor (a hot
        pixel is a defect and shows in most frames; a piece that shows once is a
        charge deposit), see :func:`postprocess.ccd_persistence_rule`.
    diameter : typical nucleus width in the image, px; ``"auto"`` to estimate
        it (up to three passes over a central 768 x 768 crop of the first
        frame; all frames of a stack use it), or None (default) to segment as
        trained. When it lies outside the widths the model was trained on
        (``config["object_size"]``), every tile is resized so its nuclei come
        within them, and the probabilities are resized back: labels and tables
        stay in the image's pixels. ``tile`` and a pixel ``overlap`` are then
        what the network sees (``settings["image_tile"]``: the tiles read from
        the image). See :mod:`napari_microseg.inference.scale`.
    """
    if not hasattr(image, "shape"):  # a list of frames (or rows): an array (it gave "'list' object has no attribute")
        image = np.asarray(image)
    if max_size is not None and min_size is not None and max_size < min_size:  # (0 objects, no word)
        raise InputError(f"max_size ({max_size} px) is below min_size ({min_size} px): no object could be kept")
    shape = _check_input(image)
    loaded = _resolve_loaded(model, device)
    mode = loaded.output_mode
    class_names = list(loaded.class_names) if hasattr(loaded, "class_names") else []
    k = n_outputs(loaded)
    if mode == "three_class" and not class_names:
        class_names = list(postprocess.THREE_CLASS_ORDER)
    if tile is None:
        patch = getattr(loaded, "patch_size", None) or (256, 256)
        tile = max(DEFAULT_TILE, int(np.ceil(max(patch) / 32)) * 32)
    tile = _check_tiling(tile, overlap, batch_size)
    stack = len(shape) == 3
    n_frames = shape[0] if stack else 1
    h, w = shape[-2:]
    if keep_probabilities is None:
        keep_probabilities = n_frames * k * h * w <= 64_000_000
    label_shape = shape
    if out is not None and tuple(out.shape) != label_shape:
        raise InputError(f"output array has shape {tuple(out.shape)}, expected {label_shape}")
    # uint16 until a frame holds more than 65,535 objects (then widened once): a uint32 buffer of a whole movie
    # and its uint16 copy held 6 bytes a pixel beside the movie itself
    label_dtype = np.uint8 if mode == "multiclass" else np.uint16
    labels_out = out if out is not None else np.zeros(label_shape, dtype=label_dtype)
    probs_all = np.zeros(((n_frames,) if stack else ()) + (k, h, w), np.float32) if keep_probabilities else None
    from ..device import network_precision, resolve_precision

    try:
        precision_used = resolve_precision(precision, str(getattr(loaded, "device", "cpu")))
    except ValueError as err:
        raise InputError(str(err)) from None
    fn = predict_fn or make_predict_fn(loaded, precision=precision_used)
    plain_fn = fn  # the diameter estimate runs without test-time augmentation
    if test_time_augmentation:
        fn = flip_averaged(fn)
    diameter = scale.parse_diameter(diameter)
    size_spec = scale.object_size_spec(loaded) if mode != "multiclass" and diameter is not None else None
    if diameter is not None and size_spec is None:
        raise InputError("this model does not state the nucleus size it was trained on (config 'object_size'), "
                         "so it cannot rescale to a diameter; segment without one")
    if diameter == "auto":
        # frame 0 first; a stack whose first frame holds no nucleus (a blank before the movie starts) is
        # estimated on a few later frames (it was segmented at the trained size without a word)
        n_stack = int(image.shape[0]) if len(image.shape) == 3 else 1
        tried = sorted(set(np.linspace(0, n_stack - 1, min(n_stack, scale.ESTIMATE_FRAMES)).round().astype(int)))
        for frame_index in tried:
            estimator = _estimate_diameter(loaded, scale.central_crop(image, frame=frame_index), plain_fn, tile, size_spec,
                                           dict(threshold=threshold, min_size=min_size, postprocess_options=postprocess_options))
            diameter = yield from estimator
            if np.isfinite(diameter):
                break
        else:
            import warnings

            from ..errors import MicrosegWarning

            which = "the image" if n_stack == 1 else f"frame(s) {', '.join(str(t) for t in tried)}"
            warnings.warn(MicrosegWarning(f"--diameter auto: no nucleus found in {which} to estimate the nucleus width "
                                          "from: segmented at the trained size (give --diameter in px)"), stacklevel=2)
    scale_factor = scale.factor_for_diameter(diameter, size_spec) if diameter is not None else 1.0
    if scale_factor in (scale.MIN_FACTOR, scale.MAX_FACTOR) and scale_factor != 1.0:
        import warnings

        from ..errors import MicrosegWarning

        needed = size_spec["diameter"] / float(diameter)
        if not scale.MIN_FACTOR < needed < scale.MAX_FACTOR:  # resized as far as it goes, nuclei still off size
            warnings.warn(MicrosegWarning(
                f"nuclei of {float(diameter):g} px would need the image resized x{needed:.3g} to the model's "
                f"{size_spec['diameter']:g} px: resized x{scale_factor:g}, the limit, so they stay "
                f"{float(diameter) * scale_factor:.0f} px wide (is the diameter right?)"), stacklevel=2)
    network_tile, network_overlap = tile, resolve_overlap(tile, overlap)  # px, at most half a tile (as used)
    if scale_factor != 1.0:
        fn = scale.rescaled_predict_fn(fn, scale_factor)
        tile = scale.native_tile(tile, scale_factor, max_side=max(h, w))
        overlap = scale.native_overlap(overlap, scale_factor)
        tiles_yx = (tile, tile)
        network_pixels = network_tile * network_tile  # each tile is resized to this before the network
    else:  # tiles no larger than needed: the same count as tile x tile, spread evenly
        overlap = resolve_overlap(tile, overlap)
        tiles_yx = (fitted_tile(h, tile, overlap), fitted_tile(w, tile, overlap))
        network_pixels = tiles_yx[0] * tiles_yx[1]
        # a fitted tile below the asked one takes at most half of itself (as the tiler does): recorded as used,
        # one overlap for both axes (tiles of 128 x 130 px: 64)
        network_overlap = overlap = min(overlap, min(tiles_yx) // 2)
    # large tiles go fewer per network call: about the pixels (and memory) of batch_size 256 x 256 tiles
    tiles_per_call = max(1, round(batch_size * BATCH_TILE_PIXELS / network_pixels))
    from ..training.normalize import scale_mismatch

    # the commonest silent failure: an image on another intensity scale than the training images
    scale_warning = scale_mismatch(np.asarray(scale.central_crop(image, SCALE_CHECK_CROP)), loaded.config)
    spec = loaded.config.get("normalization") or loaded.config.get("normalisation")
    raw_image = image  # objects are measured on the pixels as read (raw ADC for CCD frames)
    if isinstance(spec, dict) and spec.get("level_taps"):
        image = TapLevelledFrames(image)
    from ..training.normalize import input_limits

    transform, _ = make_band_transform(image, spec, input_limits(loaded.config))
    prob_dtype = np.float16 if h * w > PROBABILITY_FLOAT16_PIXELS and not keep_probabilities else np.float32
    per_frame_tiles = count_tiles((h, w), tiles_yx, overlap)
    total = per_frame_tiles * n_frames
    object_tables: list[pd.DataFrame] = []
    max_label = 0
    tuned = tuned_postprocess(loaded)
    options = dict(postprocess_options or {})
    if threshold is None:  # explicit argument, then the options, then the model's tuned value
        threshold = float(options.get("threshold", tuned.get("threshold", 0.5)))
    if not (isinstance(threshold, (int, float, np.floating)) and 0.0 < float(threshold) < 1.0):
        raise InputError(f"threshold must be a probability between 0 and 1 (exclusive), got {threshold!r}")
    tuned.pop("threshold", None)
    options.pop("threshold", None)
    shape_rules = bool(options.pop("shape_rules", False))
    max_cluster_size = options.pop("max_cluster_size", None)
    hot_repeats = bool(options.pop("hot_repeats", False))
    ccd_rules = shape_rules or max_cluster_size is not None
    if (ccd_rules or hot_repeats) and mode != "multiclass":
        raise InputError("shape rules (hot pixels are lines, a maximum cluster size, hot pixels repeat) apply to "
                         "CCD class models only")
    if hot_repeats and n_frames < 2:
        raise InputError("the rule 'hot pixels repeat' needs a (T, Y, X) stack of at least 2 exposures of one sensor")
    # the repeat rule needs every frame's classes first: each frame is then measured after it
    deferred: list[tuple] = []
    if options and mode != "three_class":
        raise InputError(f"post-processing option(s) {', '.join(sorted(options))} apply to three-class models only")
    if ccd_rules or hot_repeats:
        postprocess.ccd_class_indices(class_names or [])  # the classes are there, or a clear message now
    if max_cluster_size is not None and int(max_cluster_size) < 1:
        raise InputError(f"max_cluster_size must be at least 1 px, got {max_cluster_size}")
    three_kw = {}
    if mode == "three_class":
        if loaded.config.get("distance_head") and not tuned:
            three_kw.update(DISTANCE_HEAD_DEFAULTS)  # untuned model with a distance head: seed from it
        three_kw.update(tuned)
        three_kw.update(options)
        unknown = set(three_kw) - THREE_CLASS_OPTIONS
        if unknown:
            raise InputError(f"unknown post-processing option(s) {', '.join(sorted(unknown))}; "
                             f"three-class models take {', '.join(sorted(THREE_CLASS_OPTIONS))}")
        three_kw["class_order"] = tuple(class_names) if set(postprocess.THREE_CLASS_ORDER) <= set(class_names) else postprocess.THREE_CLASS_ORDER

    non_finite_frames: list[int] = []
    constant_frames: list[int] = []
    for t in range(n_frames):
        frame = image[t] if stack else image
        if probs_all is not None:  # predict straight into the returned array
            probs = probs_all[t] if stack else probs_all
        else:
            probs = np.zeros((k, h, w), prob_dtype)
        gen = predict_tiled_iter(frame, fn, k, tile=tiles_yx, overlap=overlap, batch_size=tiles_per_call, out=probs,
                                 transform=lambda band, _t, t=t: transform(band, t))
        while True:
            try:
                ev = next(gen)
            except StopIteration:
                break
            yield Progress(t * per_frame_tiles + ev.done, total, f"frame {t + 1}/{n_frames}" if stack else "tiles")
        if not np.isfinite(probs.sum(dtype=np.float64)):  # a broken network: "0 objects" is no finding
            non_finite_frames.append(t)  # (a sum: no array of the frame's size made to check it)
        lab = postprocess.probabilities_to_labels(probs, mode, threshold=threshold, min_size=min_size,
                                                  max_size=max_size, fill_holes=fill_holes,
                                                  remove_border=remove_border, **three_kw)
        if mode != "multiclass" and _is_constant(frame):
            lab[...] = 0  # a blank frame holds no nuclei, whatever a network makes of it
            constant_frames.append(t)
        if ccd_rules:
            lab = postprocess.ccd_shape_rules(lab, class_names, hot_lines=shape_rules, max_cluster_size=max_cluster_size)
        # multiclass: each pixel's probability of the class it ends up in -> per-object means
        confidence = _class_probability(probs, lab) if measure and mode == "multiclass" else None
        if hot_repeats and measure:  # kept for the measuring after the rule: the rule moves hot <-> cluster only
            deferred.append((confidence, _hot_cluster_probabilities(probs, lab, class_names)))
            confidence = None
        del probs
        if stack:  # a long stack: the C allocator's freed frame-sized blocks given back (it kept ~2 MB a frame)
            _return_freed_memory()
        if mode != "multiclass":
            max_label = max(max_label, int(lab.max()) if lab.size else 0)
        if out is not None:
            _check_fits(lab, out.dtype, t if stack else None)
        elif mode != "multiclass" and max_label > np.iinfo(labels_out.dtype).max:
            labels_out = labels_out.astype(np.uint32)
        if stack:
            labels_out[t] = lab
        else:
            labels_out[...] = lab
        if measure and not hot_repeats:
            object_tables.append(_measure_frame(lab, _frame_pixels(raw_image, t if stack else None), t, mode,
                                                class_names, confidence))
        del confidence
        yield Progress((t + 1) * per_frame_tiles, total, f"post-processed frame {t + 1}/{n_frames}")
    if constant_frames and not isinstance(raw_image, np.ndarray):  # (an image in memory is said by its reader)
        import warnings

        from ..errors import MicrosegWarning

        which = "the image" if not stack else (f"{len(constant_frames)} of {n_frames} frame(s) "
                                               f"({', '.join(str(t) for t in constant_frames[:6])}"
                                               f"{' ...' if len(constant_frames) > 6 else ''})")
        warnings.warn(MicrosegWarning(f"{which} constant (every pixel one value): nothing to segment there (chunks "
                                      "of a Zarr store not written, an incompletely copied store?)"), stacklevel=2)
    if non_finite_frames:
        import warnings

        from ..errors import MicrosegWarning

        where = "the image" if not stack else f"{len(non_finite_frames)} of {n_frames} frame(s)"
        warnings.warn(MicrosegWarning(f"the model's output is not finite (NaN or infinite) in {where}: the model "
                                      "file is broken (trained with too high a learning rate?); no object is found "
                                      "where its output is not a number"), stacklevel=2)
    if hot_repeats:
        before = np.asarray(labels_out[:])  # a view of numpy labels: compared with the rule's result before it is written
        repeat_info: dict = {}
        after = postprocess.ccd_persistence_rule(before, class_names, info=repeat_info)
        _, hot, _ = postprocess.ccd_class_indices(class_names)
        for t, (confidence, (where, p_hot, p_cluster)) in enumerate(deferred):
            postprocess.repeat_rule_confidence(confidence, before[t], after[t], where, p_hot, p_cluster, hot)
            object_tables.append(_measure_frame(after[t], _frame_pixels(raw_image, t), t, mode, class_names, confidence))
        labels_out[...] = after
        del before, after, deferred

    labels = labels_out
    if out is None and mode != "multiclass":
        labels = labels_out.astype(postprocess.label_dtype(max_label), copy=False)
    objects, counts = _tables(object_tables, labels, n_frames, mode, class_names) if measure else (
        pd.DataFrame(), pd.DataFrame())
    coverage_warning = (_one_object_covers_the_frame(objects, int(labels.shape[-2]) * int(labels.shape[-1]))
                        if mode != "multiclass" else None)
    settings = dict(tile=network_tile, overlap=network_overlap, image_tile=tile, tiles_yx=[int(v) for v in tiles_yx], batch_size=batch_size,
                    tiles_per_call=tiles_per_call, device=getattr(loaded, "device", device),
                    **({"threshold": threshold, "min_size": min_size, "max_size": max_size, "fill_holes": fill_holes,
                        "remove_border": remove_border} if mode != "multiclass" else  # a class map keeps every pixel
                       dict.fromkeys(("threshold", "min_size", "max_size", "fill_holes", "remove_border"))),
                    output_mode=mode, n_outputs=k,
                    postprocess={k_: v for k_, v in three_kw.items() if k_ != "class_order"},
                    test_time_augmentation=test_time_augmentation,
                    shape_rules=shape_rules, max_cluster_size=max_cluster_size, hot_repeats=hot_repeats,
                    **(repeat_info if hot_repeats else {}),
                    precision=network_precision(precision_used, str(getattr(loaded, "device", "cpu")))
                    if predict_fn is None else "custom",
                    diameter=diameter if diameter is None or np.isfinite(diameter) else None,  # None: nothing to measure
                    scale_factor=scale_factor, scale_warning=scale_warning, coverage_warning=coverage_warning,
                    normalization=spec, model_path=getattr(loaded, "path", None))
    return SegmentResult(labels=labels, probabilities=probs_all, objects=objects, counts=counts,
                         output_mode=mode, class_names=class_names, settings=settings)


_LIBC: list = []


def _return_freed_memory() -> None:
    """Ask glibc to give freed heap memory back to the system (``malloc_trim``): segmenting a long stack
    frame by frame otherwise grew by ~2 MB a frame (fragmentation: 2 GB for 250 frames of 1024 x 1024,
    500 MB with the allocator's threshold fixed). Nothing elsewhere."""
    if not _LIBC:
        import ctypes
        import sys

        try:
            _LIBC.append(ctypes.CDLL("libc.so.6").malloc_trim if sys.platform.startswith("linux") else None)
        except (OSError, AttributeError):
            _LIBC.append(None)
    if _LIBC[0] is not None:
        _LIBC[0](0)


def _is_constant(frame: Any) -> bool:
    """True when every pixel of a (Y, X) frame (numpy, zarr or dask) has one value."""
    if hasattr(frame, "compute"):
        import dask

        low, high = dask.compute(frame.min(), frame.max())
    else:
        values = np.asarray(frame)
        low, high = values.min(), values.max()
    return bool(low == high)


def _frame_pixels(image: Any, t: int | None) -> np.ndarray:
    """Frame ``t`` of a (T, Y, X) image (None: the (Y, X) image itself) as a numpy array (zarr, dask read)."""
    raw = image[t] if t is not None else image
    return np.asarray(raw.compute() if hasattr(raw, "compute") else raw)


def _hot_cluster_probabilities(probs: np.ndarray, classes: np.ndarray, class_names: list) -> tuple[np.ndarray, ...]:
    """(flat indices, P(hot pixel), P(cluster)) at the pixels of ``classes`` that are hot pixel or cluster:
    what the repeat rule needs to give a moved pixel the probability of its new class."""
    _, hot, cluster = postprocess.ccd_class_indices(class_names)
    flat = classes.ravel()
    where = np.flatnonzero((flat == hot) | (flat == cluster))
    return where, probs[hot].ravel()[where].astype(np.float32), probs[cluster].ravel()[where].astype(np.float32)


def _class_probability(probs: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """(Y, X) float32: at each pixel, the probability (of ``probs``, (K, Y, X)) of its class in
    ``classes`` (after any shape rules moved pixels between classes)."""
    out = np.zeros(classes.shape, np.float32)
    for c in range(probs.shape[0]):
        where = classes == c
        out[where] = probs[c][where]
    return out


def _measure_frame(lab: np.ndarray, intensity: np.ndarray, t: int, mode: str, class_names: list,
                   confidence: np.ndarray | None = None) -> pd.DataFrame:
    """Objects table of one frame; multiclass maps become connected components per class with
    ``class_id`` (the class value), ``class`` (its name, as ``classify objects`` writes it) and
    ``probability`` (mean over the object's pixels of the probability of its class;
    ``confidence``: (Y, X) per-pixel probability of the chosen class)."""
    from ..measure.tables import frame_object_table

    if mode != "multiclass":
        return frame_object_table(lab, intensity, t)
    inst, classes = postprocess.class_map_to_instances(lab)
    df = frame_object_table(inst, intensity, t)
    if len(df):
        ids = df["label"].to_numpy()
        cls = classes[ids - 1]
        df["class_id"] = cls
        df["class"] = [class_names[c] if c < len(class_names) else str(c) for c in cls]
        if confidence is not None:
            sums = np.bincount(inst.ravel(), weights=confidence.ravel(), minlength=int(ids.max()) + 1)
            df["probability"] = sums[ids] / df["area"].to_numpy()
    else:
        df["class_id"] = pd.Series(dtype="int64")
        df["class"] = pd.Series(dtype="object")
        if confidence is not None:
            df["probability"] = pd.Series(dtype="float64")
    return df


def class_map_tables(class_map: np.ndarray, image: np.ndarray, class_names: list) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The ``objects.csv`` and ``counts.csv`` tables of a class map, as ``segment`` makes them for a
    class (CCD) model, so a map from thresholds (``autolabel ccd``) compares column by column.

    Parameters
    ----------
    class_map : (Y, X) or (T, Y, X) int array of class ids (0 background).
    image : the image of the same shape (intensities for ``mean_intensity``...).
    class_names : names of class ids 0..K-1.

    Returns
    -------
    objects : one row per connected component of each class: ``t, label, y, x, area (px), ...,
        class_id, class`` (the class's name).
    counts : per frame ``t, count, count_<class>..., fraction_<class>...`` (fractions 0-1 of the
        frame's pixels).
    """
    maps, images = (class_map, image) if class_map.ndim == 3 else (class_map[None], image[None])
    names = list(class_names)
    tables = [_measure_frame(np.asarray(m), np.asarray(i), t, "multiclass", names) for t, (m, i) in enumerate(zip(maps, images))]
    return _tables(tables, maps, len(tables), "multiclass", names)


def _tables(object_tables: list, labels: Any, n_frames: int, mode: str, class_names: list,
            fractions: pd.DataFrame | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The objects and counts tables of a run from its per-frame object tables; a class model's counts
    hold each frame's class fractions, measured on ``labels`` (T, Y, X) unless given as ``fractions``
    (``t, fraction_<class>...``, for runs that keep no more than one frame's class map in memory)."""
    from ..measure.counts import class_fractions, counts_from_objects, counts_with_area

    nonempty = [d for d in object_tables if len(d)]
    objects = pd.concat(nonempty, ignore_index=True) if nonempty else object_tables[0]
    if mode == "multiclass":
        names = class_names or [str(i) for i in range(int(np.max(labels)) + 1)]
        counts = counts_from_objects(objects, n_frames, "class_id", names)
        counts = counts.merge(class_fractions(labels, names) if fractions is None else fractions, on="t")
        return objects, counts
    # with the [N] alternative count: foreground area / typical (median) object area of the run
    return objects, counts_with_area(objects, range(n_frames))


def _estimate_diameter(loaded: Any, crop: Any, fn: Callable, tile: int, size_spec: dict,
                       options: dict) -> Generator[Progress, None, float]:
    """Typical nucleus width (px) of a (Y, X) crop, by up to ``scale.ESTIMATE_PASSES`` predictions.

    Each pass measures the predicted foreground with :func:`scale.foreground_diameter`
    (robust to nuclei cut by false boundaries and to specks); the next pass resizes the crop
    so that nuclei of the width measured are of the model's typical trained width, where the
    network sees them whole (nuclei near the top of the trained widths or above are seen in part,
    and measured too narrow: x3 DSB2018 nuclei of 65-70 px measured 38-48 px at their own size,
    against a 10-42 px range). Stops when the resize changes by less than 10 %, or after the first pass
    when it measures nuclei well inside the trained widths (``scale.WELL_INSIDE``). NaN when no nucleus
    is found.
    """
    crop = np.asarray(crop.compute() if hasattr(crop, "compute") else crop)
    factor, estimate = 1.0, float("nan")
    for n in range(scale.ESTIMATE_PASSES):
        yield Progress(0, 1, f"estimating the nucleus diameter (pass {n + 1})")
        result = segment(loaded, crop, tile=scale.native_tile(tile, factor, max_side=max(crop.shape)),
                         predict_fn=scale.rescaled_predict_fn(fn, factor), measure=False, keep_probabilities=True, **options)
        foreground = postprocess.foreground_probability(result.probabilities, result.output_mode, result.class_names)
        measured = scale.foreground_diameter(foreground > float(result.settings["threshold"]))
        if not np.isfinite(measured):  # nothing found at this size: keep what an earlier pass measured
            break
        estimate = measured
        low, high = size_spec["range"]
        if n == 0 and scale.WELL_INSIDE[0] * low <= estimate <= scale.WELL_INSIDE[1] * high:
            break  # well inside the trained widths, seen whole: one pass (nothing is resized either way)
        wanted = float(np.clip(size_spec["diameter"] / estimate, scale.MIN_FACTOR, scale.MAX_FACTOR))
        if abs(np.log(wanted / factor)) < np.log(1.1):
            break
        factor = wanted
    return estimate


#: an object covering this share of its frame or more is taken for a failed segmentation (warned about)
FRAME_COVERING_SHARE = 0.9


def _one_object_covers_the_frame(objects: pd.DataFrame, frame_pixels: int) -> str | None:
    """A warning where one object covers :data:`FRAME_COVERING_SHARE` of its frame or more (an undertrained
    network whose classes are ~1/3 each: "1 - background" is ~0.67 everywhere, the whole frame one object,
    count 1 in every frame, reported as a success), else None. ``objects``: the objects table (``area`` px,
    ``t`` for stacks); ``frame_pixels``: Y * X."""
    if objects is None or objects.empty or "area" not in objects.columns or frame_pixels <= 0:
        return None
    covering = objects[objects["area"] >= FRAME_COVERING_SHARE * frame_pixels]
    if covering.empty:
        return None
    frames = sorted({int(t) for t in covering["t"]}) if "t" in covering.columns else []
    where = f" in {len(frames)} frame(s) (first: t={frames[0]})" if frames else ""
    return (f"one object covers {100 * float(covering['area'].max()) / frame_pixels:.0f} % of the frame{where}: "
            "the segmentation failed there (an undertrained model, or an image unlike its training data?)")


def segment(model: Any, image: Any, **kwargs: Any) -> SegmentResult:
    """Plain-call form of :func:`segment_image` (no progress events)."""
    gen = segment_image(model, image, **kwargs)
    while True:
        try:
            next(gen)
        except StopIteration as stop:
            return stop.value
