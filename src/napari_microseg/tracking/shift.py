"""Stage-shift estimation between the frames of a time-lapse.

When the microscope stage jumps between time points, every object moves by the
same vector and a tracker that expects small displacements breaks all tracks.
We estimate the jump between consecutive frames by phase correlation
(:func:`skimage.registration.phase_cross_correlation`), accumulate it into
per-frame offsets relative to frame 0, and track on corrected positions
``(y - dy[t], x - dx[t])``; the exported coordinates stay in the original
image frame.
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError


def frame_shift(reference: np.ndarray, moving: np.ndarray, *, upsample_factor: int = 1) -> np.ndarray:
    """Displacement ``(dy, dx)`` in pixels of the content of ``moving`` relative to ``reference``.

    A feature at ``(y, x)`` in ``reference`` appears at ``(y + dy, x + dx)`` in ``moving``.
    Both are 2D float arrays of the same shape.
    """
    from skimage.registration import phase_cross_correlation

    from scipy.signal.windows import tukey

    ref = np.asarray(reference, dtype=np.float32)
    mov = np.asarray(moving, dtype=np.float32)
    if not (ref.any() and mov.any()):
        return np.zeros(2)
    # a Tukey window (flat middle, edges tapered to 0) so that the image edges, where content enters
    # and leaves the field, do not pull the correlation peak: on a real DAPI time-lapse shifted by
    # known amounts the cumulative error went from 1.3 px to 0.1 px
    window = np.outer(tukey(ref.shape[0], 0.25), tukey(ref.shape[1], 0.25)).astype(np.float32)
    # phase_cross_correlation returns the shift that registers ``mov`` onto ``ref``
    shift, _, _ = phase_cross_correlation((ref - ref.mean()) * window, (mov - mov.mean()) * window,
                                          upsample_factor=upsample_factor, normalization=None)
    return -np.asarray(shift, dtype=np.float64)


def estimate_stage_shift(
    stack: np.ndarray,
    *,
    max_shift: float | None = None,
    min_shift: float = 0.5,
    upsample_factor: int = 10,
    rejected: list | None = None,
) -> np.ndarray:
    """Cumulative stage offsets of each frame relative to frame 0.

    Parameters
    ----------
    stack : array (T, Y, X): images, or object masks (``labels > 0``) for the
        "objects" mode; anything indexable by frame with a ``shape`` (a dask or zarr
        array on disk) is read one frame at a time.
    max_shift : largest accepted jump between consecutive frames, pixels;
        larger estimates are treated as failures (offset unchanged). Default:
        a quarter of the smaller image side.
    min_shift : jumps shorter than this (pixels) are set to 0, so that noise
        in the estimate does not accumulate into a drift (default 0.5).
    rejected : a list to which ``(t, length_px)`` of each jump longer than ``max_shift`` is appended
        (left out: the offset stays; the caller says so).
    upsample_factor : sub-pixel precision 1/upsample_factor (default 10: on
        simulated nuclei with stage jumps of sd 15 px the cumulative offsets
        were within 1.3 px (images) / 1.7 px (object masks) over 30 frames).

    Each frame is registered against the last earlier frame that is not empty (all
    zero), so a black frame or a frame without objects does not lose the jump across it;
    empty frames keep the offset of the frame before them.

    Returns
    -------
    float64 array (T, 2): ``(dy, dx)`` per frame, ``offsets[0] == (0, 0)``.
    """
    if not hasattr(stack, "shape"):
        stack = np.asarray(stack)
    shape = tuple(stack.shape)
    if len(shape) != 3:
        raise InputError(f"stage shift needs a (T, Y, X) stack, got shape {shape}")
    n = shape[0]
    if max_shift is None:
        max_shift = min(shape[1:]) / 4.0
    offsets = np.zeros((n, 2))
    if n == 0:
        return offsets
    reference, reference_frame = 0, np.asarray(stack[0])  # the last frame with content: an empty (black)
    for t in range(1, n):  # frame gives no estimate, so the jump across it is measured from the frame
        offsets[t] = offsets[reference]  # before it instead of being lost
        frame = np.asarray(stack[t])  # one frame at a time: a stack on disk is read once, never whole
        if not np.any(frame):
            continue
        if np.any(reference_frame):
            d = frame_shift(reference_frame, frame, upsample_factor=upsample_factor)
            length = float(np.hypot(*d))
            if min_shift <= length <= max_shift:
                offsets[t] += d
            elif length > max_shift and rejected is not None:
                rejected.append((t, round(length, 1)))
        reference, reference_frame = t, frame
    return offsets
