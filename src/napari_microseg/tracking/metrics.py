"""Tracking accuracy against ground truth.

- :func:`ctc_scores`: Cell Tracking Challenge TRA, DET, LNK (AOGM based) and
  division precision / recall / F1, computed by the maintained
  ``traccuracy`` package (CTC matcher: a prediction matches a ground-truth
  object when it covers more than half of it).
- :func:`link_recall`: fraction of true links kept, cheap: a true link is the
  same ground-truth object in two consecutive frames; it is kept when the
  predicted objects matched to it (majority overlap, > 50 % of the true
  object's pixels) in both frames carry the same track id.
- :func:`point_link_recall` and :func:`unbroken_fraction`: the same for point
  data where each detection knows its true id (benchmarks).
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import InputError
from .track import TrackResult


def _quiet() -> None:
    """Silence traccuracy's logging and its tqdm progress bars."""
    import functools
    import sys

    for name in ("traccuracy", "traccuracy.matchers", "traccuracy.loaders", "traccuracy.metrics"):
        logging.getLogger(name).setLevel(logging.ERROR)
    import traccuracy.loaders  # noqa: F401
    import traccuracy.matchers  # noqa: F401
    import traccuracy.metrics  # noqa: F401
    from tqdm import tqdm

    quiet_tqdm = functools.partial(tqdm, disable=True)
    for mod_name, mod in list(sys.modules.items()):
        if mod_name.startswith("traccuracy") and getattr(mod, "tqdm", None) is tqdm:
            mod.tqdm = quiet_tqdm


def tracking_graph(result: TrackResult, name: str = "tracks"):
    """Convert a :class:`TrackResult` (with ``relabelled``) into a ``traccuracy.TrackingGraph``.

    Nodes are objects (segmentation id = track id in ``relabelled``), edges join
    consecutive rows of a track (gaps become skip edges) and each mother's last
    object to each daughter's first object.
    """
    import networkx as nx

    _quiet()
    from traccuracy import TrackingGraph

    if result.relabelled is None:
        raise InputError("CTC metrics need label masks (tracks from points have none)")
    tab = result.table.sort_values(["track_id", "t"]).reset_index(drop=True)
    segmentation = np.asarray(result.relabelled)
    track_ids = np.unique(tab["track_id"].to_numpy(np.int64))
    if track_ids.size and int(track_ids[-1]) > max(2 * track_ids.size, 1000):
        # ids numbered 1..n in their order: int32 wrapped ids past 2^31 (TRA 0, unsaid), and traccuracy's
        # matcher allocates by the largest id (8 GB for ids of 2e8 on a 4 x 64 x 64 movie)
        tab = tab.copy()
        tab["track_id"] = np.searchsorted(track_ids, tab["track_id"].to_numpy(np.int64)) + 1
        parents = tab["parent_track_id"].to_numpy(np.int64)
        known = np.isin(parents, track_ids)
        tab["parent_track_id"] = np.where(known, np.searchsorted(track_ids, parents) + 1, 0)
        renumbered = np.zeros(segmentation.shape, np.int32)
        inside = segmentation != 0
        values = segmentation[inside].astype(np.int64)
        position = np.clip(np.searchsorted(track_ids, values), 0, track_ids.size - 1)
        renumbered[inside] = np.where(track_ids[position] == values, position + 1, 0)  # (ids no row lists: none)
        segmentation = renumbered
    node = np.arange(1, len(tab) + 1)
    g = nx.DiGraph()
    g.add_nodes_from(
        (int(n), {"t": int(t), "y": float(y), "x": float(x), "segmentation_id": int(s)})
        for n, t, y, x, s in zip(node, tab["t"], tab["y"], tab["x"], tab["track_id"])
    )
    same = (tab["track_id"].to_numpy()[1:] == tab["track_id"].to_numpy()[:-1])
    g.add_edges_from(zip(node[:-1][same].tolist(), node[1:][same].tolist()))
    first = tab.groupby("track_id").head(1)
    last = tab.groupby("track_id").tail(1)
    last_node = dict(zip(last["track_id"], node[last.index]))
    for idx, p in zip(first.index, first["parent_track_id"]):
        if p and p in last_node:
            g.add_edge(int(last_node[p]), int(node[idx]))
    return TrackingGraph(g, segmentation=segmentation.astype(np.int32, copy=False), name=name, location_keys=("y", "x"))


def load_ctc_graph(folder: str | os.PathLike, name: str | None = None):
    """Load a CTC folder (``*_track.txt`` + masks) with traccuracy's own loader."""
    _quiet()
    from traccuracy.loaders import load_ctc_data

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        empty = _empty_ctc_graph(folder, name or Path(folder).name)
        if empty is not None:
            return empty
        try:
            return load_ctc_data(str(folder), name=name or Path(folder).name)
        except (KeyError, TypeError, ValueError, IndexError, AssertionError) as err:  # a malformed folder
            raise InputError(f"{folder}: not a readable Cell Tracking Challenge folder (*_track.txt lines "
                             f"'L B E P' of whole numbers, masks of the same track ids): {type(err).__name__}: {err}"
                             ) from None


def _as_graph(obj, name: str):
    if isinstance(obj, TrackResult):
        return tracking_graph(obj, name)
    if isinstance(obj, (str, os.PathLike)):
        return load_ctc_graph(obj, name)
    return obj  # assume a TrackingGraph


def _empty_ctc_graph(folder: str | os.PathLike, name: str):
    """The graph of a CTC folder whose ``*_track.txt`` lists no track (an empty movie's export, which
    traccuracy's loader cannot read): no nodes, its masks. None for any other folder; InputError when
    its masks hold objects the track file does not list."""
    import networkx as nx
    from traccuracy import TrackingGraph
    from traccuracy.loaders._ctc import load_tiffs

    track_files = list(Path(folder).glob("*_track.txt"))
    if len(track_files) != 1 or track_files[0].read_text(encoding="utf-8", errors="replace").strip():
        return None
    masks = np.asarray(load_tiffs(str(folder)))
    if masks.any():
        raise InputError(f"{folder}: {track_files[0].name} lists no track but its masks hold objects")
    return TrackingGraph(nx.DiGraph(), segmentation=masks.astype(np.int32), name=name,
                         location_keys=("z", "y", "x") if masks.ndim == 4 else ("y", "x"))


def _from_first_frame(gt, pred):
    """``gt`` and ``pred`` for traccuracy's CTCMatcher (0.4), which reads the masks of frame ``t`` at
    ``t - gt.start_frame``: when the truth's first frames are empty, their masks are left out (every frame
    was compared with another's mask: wrong scores, or a KeyError). Copies; the graphs are not changed."""
    import copy

    start = gt.start_frame
    if not start or gt.segmentation is None or pred.segmentation is None:
        return gt, pred
    gt, pred = copy.copy(gt), copy.copy(pred)
    gt.segmentation, pred.segmentation = gt.segmentation[start:], pred.segmentation[start:]
    return gt, pred


#: division matching renumbers the labels frame by frame (:func:`_compact_labels`) when traccuracy's dense
#: IoU table per frame, (largest truth id + 1) x (largest predicted id + 1), would exceed this many cells
#: (32 MB of float64); below, the renumbering costs more than it saves (7-11 % of a 30-frame evaluation)
COMPACT_ABOVE_CELLS = 4_000_000


def _largest_label(graph) -> int:
    """The largest label of a ``TrackingGraph``'s segmentation, + 1 (0 without one)."""
    segmentation = getattr(graph, "segmentation", None)
    return 0 if segmentation is None or not np.size(segmentation) else int(np.max(segmentation)) + 1


def _one_to_one(matched):
    """A traccuracy ``Matched`` with each predicted object paired to one true object only (the first of
    several: a merged prediction over two true markers), so that division metrics take it."""
    from traccuracy.matchers import Matched

    seen: set = set()
    kept = []
    for gt_node, pred_node in matched.mapping:
        if pred_node not in seen:
            seen.add(pred_node)
            kept.append((gt_node, pred_node))
    info = {**matched.matcher_info, "matching type": "one-to-one"}
    return Matched(matched.gt_graph, matched.pred_graph, kept, info)


def _compact_labels(graph):
    """A copy of a ``TrackingGraph`` whose labels run 1..n within each frame (the nodes' label attribute
    following): traccuracy's IoU matcher builds a dense (largest truth id + 1) x (largest predicted id + 1)
    table per frame, 6.7 GiB for two cells numbered 30000 in a 3-frame movie; here it is objects x objects."""
    from traccuracy import TrackingGraph

    if graph.segmentation is None or graph.label_key is None:
        return graph
    segmentation = np.asarray(graph.segmentation)
    compact = np.zeros(segmentation.shape, np.int32)
    new_id: dict = {}
    for t in range(segmentation.shape[0]):
        ids = np.unique(segmentation[t])
        ids = ids[ids != 0]
        if ids.size:
            inside = segmentation[t] != 0
            compact[t][inside] = np.searchsorted(ids, segmentation[t][inside]) + 1
        new_id[t] = {int(old): i + 1 for i, old in enumerate(ids)}
    nodes = graph.graph.copy()
    for _node, attrs in nodes.nodes(data=True):
        frame, old = int(attrs[graph.frame_key]), int(attrs[graph.label_key])
        attrs[graph.label_key] = new_id.get(frame, {}).get(old, old)  # (traccuracy: frame t is segmentation[t])
    return TrackingGraph(nodes, segmentation=compact, frame_key=graph.frame_key, label_key=graph.label_key,
                         location_keys=graph.location_keys, name=graph.name)


def ctc_scores(ground_truth, prediction, *, division_frame_buffer: int = 1) -> dict:
    """CTC TRA / DET / LNK and division scores of ``prediction`` against ``ground_truth``.

    Parameters
    ----------
    ground_truth, prediction : :class:`TrackResult` with label masks, a CTC
        folder path, or a ``traccuracy.TrackingGraph``.
    division_frame_buffer : divisions found up to this many frames off still count.

    Returns
    -------
    dict with ``TRA, DET, LNK`` (0..1, 1 = perfect), the AOGM error counts
    (``fp_nodes, fn_nodes, ns_nodes, fp_edges, fn_edges, ws_edges``) and
    ``division_precision, division_recall, division_f1`` (NaN when there are no
    divisions), ``true_divisions, found_divisions``.
    """
    _quiet()
    from traccuracy import run_metrics
    from traccuracy.matchers import CTCMatcher, IOUMatcher
    from traccuracy.metrics import CTCMetrics, DivisionMetrics

    gt = _as_graph(ground_truth, "ground_truth")
    pred = _as_graph(prediction, "prediction")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        results, _ = run_metrics(*_from_first_frame(gt, pred), matcher=CTCMatcher(), metrics=[CTCMetrics()])
        # division metrics need a one-to-one matching: IoU >= 0.5 one to one; for truth that IoU cannot match
        # (CTC truth of markers, a few pixels inside each nucleus: every division was missed), the CTC
        # matcher's (a predicted object covering more than half of a true one) where it pairs far more
        # objects, made one to one (a merged object that covers two markers keeps one of them)
        gt = _as_graph(ground_truth, "ground_truth")
        pred = _as_graph(prediction, "prediction")
        if _largest_label(gt) * _largest_label(pred) > COMPACT_ABOVE_CELLS:
            gt, pred = _compact_labels(gt), _compact_labels(pred)
        matched = IOUMatcher(iou_threshold=0.5, one_to_one=True).compute_mapping(gt, pred)
        by_majority = _one_to_one(CTCMatcher().compute_mapping(gt, pred))
        if len(by_majority.mapping) > 1.5 * len(matched.mapping):
            matched = by_majority
        results = list(results) + [DivisionMetrics(max_frame_buffer=division_frame_buffer).compute(matched).to_dict()]
    out: dict = {}
    for res in results:
        vals = res.get("results", {})
        if res.get("metric", {}).get("name") == "DivisionMetrics":
            key = f"Frame Buffer {division_frame_buffer}"
            div = vals.get(key, vals)
            out["division_precision"] = float(div.get("Division Precision", np.nan))
            out["division_recall"] = float(div.get("Division Recall", np.nan))
            out["division_f1"] = float(div.get("Division F1", np.nan))
            # traccuracy's own totals: the sums of its sub-counts leave out divisions found with the wrong
            # children (then the "true" count changed with the prediction)
            tp, wrong = int(div.get("True Positive Divisions", 0)), int(div.get("Wrong Children Divisions", 0))
            out["true_divisions"] = int(div.get("Total GT Divisions", tp + wrong + int(div.get("False Negative Divisions", 0))))
            out["found_divisions"] = int(div.get("Total Predicted Divisions", tp + wrong + int(div.get("False Positive Divisions", 0))))
        else:
            for k, v in vals.items():
                out[k] = float(v) if isinstance(v, (int, float, np.floating, np.integer)) else v
    if out.get("true_divisions", 0) > 0 and out.get("division_recall") == 0 \
            and not np.isfinite(out.get("division_f1", np.nan)):
        out["division_f1"] = 0.0  # divisions to find and none found right (or none found at all): F1 0, not undefined
    return out


# ----------------------------------------------------------------------------- cheap link metrics
def _match_frame(gt: np.ndarray, pred: np.ndarray) -> dict[int, int]:
    """Map each gt label to the pred label covering > 50 % of its pixels (0 if none)."""
    fg = gt > 0
    if not fg.any():
        return {}
    g = gt[fg].astype(np.int64)
    p = pred[fg].astype(np.int64)
    pairs, counts = np.unique(np.stack([g, p]), axis=1, return_counts=True)
    sizes = dict(zip(*np.unique(g, return_counts=True)))
    out: dict[int, int] = {}
    for (gl, pl), c in zip(pairs.T, counts):
        if pl != 0 and c * 2 > sizes[gl]:
            out[int(gl)] = int(pl)
    return out


def link_recall(gt_labels: np.ndarray, pred_relabelled: np.ndarray) -> float:
    """Fraction of true links kept.

    Parameters
    ----------
    gt_labels : int array (T, Y, X) whose value identifies the true object
        (the same value in consecutive frames = one true link).
    pred_relabelled : int array (T, Y, X) of predicted track ids
        (:attr:`TrackResult.relabelled`).

    Returns
    -------
    kept / true links, in [0, 1] (NaN without any true link).
    """
    gt_labels = np.asarray(gt_labels)
    pred_relabelled = np.asarray(pred_relabelled)
    if gt_labels.shape != pred_relabelled.shape:
        raise InputError(f"shape mismatch: {gt_labels.shape} vs {pred_relabelled.shape}")
    total = kept = 0
    prev = None
    prev_ids: set = set()
    for t in range(gt_labels.shape[0]):
        cur = _match_frame(gt_labels[t], pred_relabelled[t])
        ids = set(np.unique(gt_labels[t]).tolist()) - {0}
        if prev is not None:
            common = ids & prev_ids
            total += len(common)
            kept += sum(1 for g in common if prev.get(g, 0) and prev.get(g) == cur.get(g, -1))
        prev, prev_ids = cur, ids
    return kept / total if total else float("nan")


def point_link_recall(true_id: np.ndarray, t: np.ndarray, pred_track_id: np.ndarray) -> float:
    """Fraction of true links (same ``true_id`` in frames t and t+1) whose two
    detections got the same ``pred_track_id`` (arrays of equal length, one per detection)."""
    df = pd.DataFrame({"g": np.asarray(true_id), "t": np.asarray(t), "p": np.asarray(pred_track_id)})
    df = df.sort_values(["g", "t"])
    g, tt, p = df["g"].to_numpy(), df["t"].to_numpy(), df["p"].to_numpy()
    link = (g[1:] == g[:-1]) & (tt[1:] - tt[:-1] == 1)
    if not link.any():
        return float("nan")
    return float(np.mean(p[1:][link] == p[:-1][link]))


def unbroken_fraction(true_id: np.ndarray, t: np.ndarray, pred_track_id: np.ndarray) -> float:
    """Fraction of true tracks whose detections all carry one predicted track id
    that no other true track uses."""
    df = pd.DataFrame({"g": np.asarray(true_id), "p": np.asarray(pred_track_id)})
    per_true = df.groupby("g")["p"].nunique()
    single = per_true[per_true == 1].index
    owner = df.groupby("p")["g"].nunique()
    first_p = df.groupby("g")["p"].first()
    ok = [g for g in single if owner[first_p[g]] == 1]
    return len(ok) / len(per_true) if len(per_true) else float("nan")
