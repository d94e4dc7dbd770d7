"""Tracking the ground-truth labels of a simulated nuclei time-lapse."""

import numpy as np

from napari_microseg.simulate.nuclei import simulate_nuclei_timelapse
from napari_microseg.tracking.metrics import ctc_scores, link_recall
from napari_microseg.tracking.track import finalize, objects_from_labels, run_tracking


def ground_truth(sim):
    obj = objects_from_labels(sim.labels)
    obj["track_id"] = obj["label"]
    parent = sim.tracks.groupby("track_id")["parent_track_id"].first()
    obj["parent_track_id"] = obj["track_id"].map(parent).fillna(0)
    return finalize(obj, n_frames=sim.labels.shape[0], labels=sim.labels)


def test_tracking_simulated_ground_truth_labels():
    sim = simulate_nuclei_timelapse(n_frames=20, shape=(192, 192), n_nuclei=20, seed=3)
    gt = ground_truth(sim)
    res = run_tracking(sim.labels, sim.fluorescence, config="cell")
    scores = ctc_scores(gt, res)
    assert scores["DET"] == 1.0
    assert scores["TRA"] >= 0.95
    assert link_recall(sim.labels, res.relabelled) >= 0.95


def test_tracking_simulated_stage_shifts():
    sim = simulate_nuclei_timelapse(n_frames=12, shape=(192, 192), n_nuclei=20, seed=4, stage_shift_sd=12.0)
    gt = ground_truth(sim)
    plain = run_tracking(sim.labels, config="cell")
    fixed = run_tracking(sim.labels, sim.fluorescence, config="cell", stage_shift="images")
    assert ctc_scores(gt, fixed)["TRA"] > ctc_scores(gt, plain)["TRA"]
    assert ctc_scores(gt, fixed)["TRA"] >= 0.95
