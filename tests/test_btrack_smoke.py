"""btrack's native library loads (repaired by the set-up where needed) and links objects."""

from __future__ import annotations

import numpy as np


def test_bayesian_tracker_links_two_moving_objects():
    import btrack
    from btrack import BayesianTracker
    from btrack.models import MotionModel

    rows = []
    for t in range(6):
        rows.append((t, 10.0 + 2 * t, 10.0))
        rows.append((t, 60.0, 50.0 - 2 * t))
    objects = btrack.io.objects_from_array(
        np.array([[t, x, y, 0.0] for t, y, x in rows], dtype=float), default_keys=["t", "x", "y", "z"]
    )
    motion = MotionModel(
        measurements=3, states=6, dt=1.0, accuracy=7.5, prob_not_assign=0.001, max_lost=5,
        A=np.array([[1, 0, 0, 1, 0, 0], [0, 1, 0, 0, 1, 0], [0, 0, 1, 0, 0, 1],
                    [0, 0, 0, 1, 0, 0], [0, 0, 0, 0, 1, 0], [0, 0, 0, 0, 0, 1]], float),
        H=np.hstack([np.eye(3), np.zeros((3, 3))]),
        P=np.eye(6) * 15.0, G=np.array([[0.5, 0.5, 0.5, 1, 1, 1]], float).T * 7.5, R=np.eye(3) * 5.0,
    )
    with BayesianTracker(verbose=False) as tracker:
        tracker.configure({"motion_model": motion, "max_search_radius": 20.0})
        tracker.append(objects)
        tracker.volume = ((0, 100), (0, 100), (-1, 1))
        tracker.track(step_size=10)
        tracks = tracker.tracks
    lengths = sorted(len(t) for t in tracks)
    assert lengths == [6, 6], f"expected two unbroken tracks of 6 points, got {lengths}"
