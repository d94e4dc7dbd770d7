"""Simulated samples as napari layer-data tuples ``(data, kwargs, kind)``, one generator per domain.

Qt-free: the Simulation widget runs these in a worker, the napari sample-data hooks
(File > Open Sample) drain them, and both get the same layers. Each generator yields
:class:`~napari_microseg.progress.Progress` and returns a list of layer tuples.
"""

from __future__ import annotations

from typing import Generator

import numpy as np

from ..progress import Progress

def generate_nuclei(p: dict, seed: int) -> Generator[Progress, None, list[tuple]]:
    from ..simulate.nuclei import simulate_nuclei_timelapse_iter

    yield Progress(0, p["n_frames"], "simulating nuclei ...")
    sim = yield from simulate_nuclei_timelapse_iter(  # a Progress per frame: the bar moves, Stop acts between frames
        n_frames=p["n_frames"], shape=(p["size"], p["size"]), n_nuclei=p["n_nuclei"], seed=seed,
        stage_shift_sd=float(p["stage_shift"]), enter_leave=p["enter_leave"],
    )
    tracks = sim.tracks
    graph = {int(c): [int(pa)] for c, pa in tracks.groupby("track_id")["parent_track_id"].first().items() if pa}
    # one row per label id (each nucleus keeps its track's id in every frame); "index" tells napari the row
    # of each label value (without it, row i is shown for value i)
    features = (tracks.groupby("label", as_index=False)
                .agg(track_id=("track_id", "first"), parent_track_id=("parent_track_id", "first"),
                     generation=("generation", "first"), first_t=("t", "min"), last_t=("t", "max")))
    features["index"] = features["label"].to_numpy()
    notes = [sim.params["crowding_note"]] if "crowding_note" in sim.params else []
    if tracks.empty:  # a tiny field whose nuclei all lie outside it: napari cannot draw an empty Tracks layer
        notes.append("no nucleus lies in the field: no tracks layer (a larger field, or more nuclei)")
    layers = [
        (sim.fluorescence, {"name": "sim nuclei (fluorescence)", "colormap": "gray"}, "image"),
        (sim.phase, {"name": "sim nuclei (phase)", "visible": False}, "image"),
        (sim.labels, {"name": "sim nuclei labels", "opacity": 0.4, "features": features,
                      "metadata": {"simulation_note": "; ".join(notes)} if notes else {}}, "labels"),
    ]
    if not tracks.empty:
        layers.append((tracks[["track_id", "t", "y", "x"]].to_numpy(float),
                       {"name": "sim nuclei tracks (truth)", "graph": graph, "tail_length": 10}, "tracks"))
    return layers


def _within_frame(steps: Generator[Progress, None, object], i: int, n: int) -> Generator[Progress, None, object]:
    """Run frame ``i``'s generator (:func:`~napari_microseg.simulate.ccd.simulate_ccd_frame_iter`), its
    progress told as frame ``i`` of ``n`` with the step's message; return the frame."""
    while True:
        try:
            step = next(steps)
        except StopIteration as stop:
            return stop.value
        yield Progress(i, n, f"CCD frame {i + 1}/{n}: {step.message} ({step.done} %)")


def generate_ccd(p: dict, seed: int) -> Generator[Progress, None, list[tuple]]:
    from ..simulate.ccd import CLASS_NAMES, simulate_ccd_exposure, simulate_ccd_frame_iter, simulate_ccd_sensor

    from ..simulate._common import SENSOR_SAMPLE_INDEX, check_memory, sample_seed

    images, classes = [], []
    n, size = p["n_images"], p["size"]
    sensor = None
    if p.get("one_sensor"):  # exposures of one CCD: its defects drawn once, from a seed of their own
        sensor = simulate_ccd_sensor(shape=(size, size), seed=sample_seed(seed, SENSOR_SAMPLE_INDEX))
    # the frames (float32) and class maps (uint8) kept, their stacked copies, and one frame's components
    check_memory(2 * n * size * size * (4 + 1) + 4 * 4 * size * size, f"{n} CCD frames of {size} x {size} px",
                 "use fewer frames or a smaller size (the command line `microseg simulate ccd` writes frame by frame)")
    for i in range(n):
        if sensor is not None:
            frame = simulate_ccd_exposure(sensor, seed=sample_seed(seed, i), balanced=p["balanced"])  # balanced: refused there
        else:  # frame i as `microseg simulate ccd --seed SEED` makes it
            steps = simulate_ccd_frame_iter(shape=(p["size"], p["size"]), seed=sample_seed(seed, i), balanced=p["balanced"])
            # a balanced frame reports its progress (and lets Stop act) while it is built
            frame = yield from _within_frame(steps, i, n)
        images.append(frame.image)
        classes.append(frame.classes)
        yield Progress(i + 1, n, f"CCD frame {i + 1}/{n}")
    image, cls = (np.stack(images), np.stack(classes)) if n > 1 else (images[0], classes[0])
    from ..colours import class_colours

    return [
        (image, {"name": "sim CCD (ADC)", "colormap": "gray"}, "image"),
        (cls, {"name": "sim CCD classes", "opacity": 0.6, "colormap": class_colours(4),  # as Segmentation colours them
               "features": {"label": [0, 1, 2, 3], "class": list(CLASS_NAMES)}}, "labels"),
    ]


#: sample layers whose images span decades of intensity (good response images top out near 1000, saturated
#: ones at 65535): napari shows them with a contrast that follows the image shown where it can
#: (``widgets._base.contrast_per_image``); their ``contrast_limits`` stand for napari versions without it
CONTRAST_PER_IMAGE_LAYERS = ("sim response images",)


def generate_response(p: dict, seed: int) -> Generator[Progress, None, list[tuple]]:
    from ..simulate.response import build_balanced_set

    items = yield from build_balanced_set(p["n_images"], seed=seed, progress=True)  # per image: Stop acts at once
    images = np.stack([it.image for it in items])
    # the images span 1000 (good, empty) to 65535 (saturated): where napari can, the contrast follows each
    # image shown (CONTRAST_PER_IMAGE_LAYERS; one contrast for the stack left the good empty ones and faint
    # fibres black); else one contrast for the stack that shows a typical image
    typical_top = float(np.median(np.percentile(images.reshape(len(images), -1), 99.5, axis=1)))
    low = float(np.percentile(images, 1))
    artefacts = np.stack([np.where(it.artefact_mask, 1, np.where(it.integration_mask, 2, 0)).astype(np.uint8) for it in items])
    return [
        (images, {"name": "sim response images", "colormap": "magma",
                  "contrast_limits": (low, max(typical_top, low + 1.0)),
                  "metadata": {"label": [it.label for it in items], "subclass": [it.subclass for it in items],
                               "crop_box": [list(it.params["crop_box"]) for it in items]}}, "image"),
        (artefacts, {"name": "sim response areas (1 artefact, 2 integration)", "opacity": 0.4,
                     "features": {"label": [0, 1, 2], "class": ["background", "artefact", "integration"]}}, "labels"),
    ]


def generate_liposomes(p: dict, seed: int) -> Generator[Progress, None, list[tuple]]:
    from ..simulate._common import sample_seed
    from ..simulate.liposomes import simulate_liposome_image

    yield Progress(0, 1, "simulating liposomes ...")
    # the first image `microseg simulate liposomes --seed SEED` writes
    sim = simulate_liposome_image(shape=(p["size"], p["size"]), n_particles=p["n_particles"], seed=sample_seed(seed, 0))
    yield Progress(1, 1, "done")
    placed = len(sim.classes)
    note = ({"simulation_note": f"only {placed} of the {p['n_particles']} particles asked for fit in the "
                                f"{p['size']} x {p['size']} px field (they may not overlap): a larger field holds more"}
            if placed < int(p["n_particles"]) else {})
    return [
        (sim.image, {"name": "sim TEM liposomes", "colormap": "gray", "metadata": note}, "image"),
        # an "index" column says which row belongs to which label value (without it napari shows row i
        # for label i: the next particle's class, as ids need not run 1..n)
        (sim.labels, {"name": "sim liposome labels", "opacity": 0.35,
                      "features": sim.classes.assign(index=sim.classes["label"].to_numpy())}, "labels"),
    ]


def generate_profiles(p: dict, seed: int) -> Generator[Progress, None, list[tuple]]:
    from ..simulate.nanoparticles import render_particle, simulate_profiles

    sim = yield from simulate_profiles(p["n"], task=p["task"], n_views=p["n_views"], seed=seed, progress=True)
    shown = min(len(sim.polygons), 64)  # pictures of the first 64 particles; every profile is kept
    renders = np.stack([render_particle(sim.polygons[i], extent=None) for i in range(shown)])
    names = [sim.class_names[int(c)] for c in sim.labels]
    which = "" if shown == len(sim.polygons) else f", first {shown} of {len(sim.polygons)}"
    return [
        (renders, {"name": f"sim nanoparticles ({p['task']}{which})", "colormap": "gray",
                   "metadata": {"class": names[:shown]}}, "image"),
        (sim.profiles, {"name": "sim profiles (particle, view, point)", "visible": False, "metadata": {"class": names}},
         "image"),
    ]


