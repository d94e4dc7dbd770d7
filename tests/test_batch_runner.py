"""Batch processing on Dask: same results as one process, resume, failures, kill + rerun, cancel.

One local cluster (2 worker processes, 1 thread each) is shared by the module;
the CLI runs join it with ``--scheduler``. Images are 64x64 so that the whole
module stays well under a minute and a half on a loaded 2-core machine.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile

from napari_microseg.batch import find_batch_inputs, run_batch, run_batch_sync
from napari_microseg.batch.manifest import Manifest, sha256_array
from napari_microseg.errors import InputError

N_IMAGES = 20
TILE = 128


def _segment_reference(model_path, image_paths, **kw):
    """Labels and tables from plain single-process ``segment`` calls (torch with 1 thread, like the workers)."""
    import torch

    from napari_microseg.inference.segment import segment
    from napari_microseg.io.models import load_model

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        loaded = load_model(model_path, device="cpu")
        labels, objects, counts = {}, [], []
        for path, rel in image_paths:
            res = segment(loaded, tifffile.imread(path), keep_probabilities=False, **kw)
            labels[rel] = np.asarray(res.labels)
            objects.append(res.objects.assign(image=rel))
            counts.append(res.counts.assign(image=rel))
    finally:
        torch.set_num_threads(before)
    return labels, pd.concat(objects, ignore_index=True), pd.concat(counts, ignore_index=True)


def _sorted(df: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    return df.sort_values(keys, kind="stable").reset_index(drop=True)


def _done_lines(manifest: Path) -> int:
    if not manifest.exists():
        return 0
    return sum('"status": "done"' in line for line in manifest.read_text().splitlines())


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    """20 simulated 64x64 nuclei images (some in a sub-folder) and one corrupt 'TIFF' (a text file)."""
    from napari_microseg.simulate.nuclei import simulate_nuclei_image

    root = tmp_path_factory.mktemp("batch_images")
    (root / "well_B").mkdir()
    for i in range(N_IMAGES):
        image, _ = simulate_nuclei_image(shape=(64, 64), n_nuclei=5, seed=100 + i)
        folder = root / "well_B" if i % 4 == 0 else root
        tifffile.imwrite(folder / f"img{i:02d}.tif", (image * 255).astype(np.uint8))
    (root / "corrupt.tif").write_text("this is not a TIFF file\n")
    return root


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    """A three-class U-Net trained for one short epoch: weak, but it finds a few objects per image."""
    from napari_microseg.progress import run_with_text_progress
    from napari_microseg.simulate.nuclei import simulate_nuclei_image
    from napari_microseg.training.trainer import train

    pairs = [simulate_nuclei_image(shape=(128, 128), n_nuclei=15, seed=s) for s in range(4)]
    out = tmp_path_factory.mktemp("batch_model") / "tiny.pt"
    cfg = {"preset": "small", "output_mode": "three_class", "patch_size": 64, "patches_per_epoch": 8, "batch_size": 4,
           "epochs": 1, "lr": 3e-3, "seed": 0, "num_threads": 2, "val_fraction": 0.25}
    with open(os.devnull, "w") as sink:
        run_with_text_progress(train(cfg, ([p[0] for p in pairs], [p[1] for p in pairs]), out_path=out), stream=sink)
    return out


@pytest.fixture(scope="module")
def cluster():
    from distributed import Client, LocalCluster

    lc = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                      scheduler_kwargs={"dashboard_address": ":0"}, silence_logs=logging.ERROR)
    client = Client(lc)
    yield client
    client.close()
    lc.close()


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory, images, tiny_model, cluster) -> tuple[Path, object]:
    """An uninterrupted batch run on the shared cluster (joined by address)."""
    out = tmp_path_factory.mktemp("batch_ref") / "out"
    summary = run_batch_sync("segment", images, out, model=tiny_model, scheduler=cluster.scheduler.address,
                             tile=TILE)
    return out, summary


def test_cluster_results_equal_single_process(images, tiny_model, reference_run):
    out, summary = reference_run
    assert (summary.total, summary.processed, summary.skipped, summary.failed) == (N_IMAGES + 1, N_IMAGES, 0, 1)
    assert summary.workers == 2
    good = [(p, rel) for p, rel in find_batch_inputs(images) if "corrupt" not in rel]
    ref_labels, ref_objects, ref_counts = _segment_reference(tiny_model, good, tile=TILE)
    assert sum(int(lab.max()) for lab in ref_labels.values()) >= N_IMAGES  # the model finds objects
    for rel, lab in ref_labels.items():
        got = tifffile.imread(out / "labels" / rel)
        np.testing.assert_array_equal(got, lab, err_msg=rel)
    objects = pd.read_csv(out / "objects.csv")
    counts = pd.read_csv(out / "counts.csv")
    assert list(objects.columns[:5]) == ["t", "label", "y", "x", "area"] and objects.columns[-1] == "image"
    assert len(objects) == len(ref_objects) and set(objects["image"]) == set(ref_labels)
    keys = ["image", "t", "label"]
    pd.testing.assert_frame_equal(_sorted(objects, keys), _sorted(ref_objects[objects.columns], keys),
                                  check_dtype=False, rtol=1e-5)
    pd.testing.assert_frame_equal(_sorted(counts, ["image", "t"]), _sorted(ref_counts[counts.columns], ["image", "t"]),
                                  check_dtype=False, rtol=1e-5)
    # the corrupt file is recorded with its reason; everything else completed
    failures = pd.read_csv(out / "failures.csv")
    assert list(failures["key"]) == ["corrupt"]
    assert "not a readable TIFF" in failures["reason"][0]
    records = Manifest(out / "manifest.jsonl").load()
    assert sum(r["status"] == "done" for r in records.values()) == N_IMAGES
    assert {r["device"] for r in records.values() if r["status"] == "done"} == {"cpu"}  # "auto" resolved
    assert records["corrupt"]["status"] == "failed"
    assert all(r["checksum"].startswith("sha256:") for r in records.values())
    assert not (out / ".batch.lock").exists()


def test_resume_skips_done_items(tmp_path, images, reference_run, tiny_model, cluster):
    ref_out, _ = reference_run
    out = tmp_path / "out"
    shutil.copytree(ref_out, out)
    before = {p: p.stat().st_mtime_ns for p in (out / "labels").rglob("*.tif")}
    events = []
    gen = run_batch("segment", images, out, model=tiny_model, scheduler=cluster.scheduler.address, tile=TILE)
    while True:
        try:
            events.append(next(gen))
        except StopIteration as stop:
            summary = stop.value
            break
    assert (summary.processed, summary.skipped, summary.failed) == (0, N_IMAGES, 1)  # only the corrupt file retried
    assert events[-1].skipped == N_IMAGES and events[-1].done == N_IMAGES + 1
    assert {p: p.stat().st_mtime_ns for p in (out / "labels").rglob("*.tif")} == before
    assert (out / "objects.csv").read_bytes() == (ref_out / "objects.csv").read_bytes()


def test_resume_redoes_changed_and_missing_items(tmp_path, tiny_model):
    from napari_microseg.simulate.nuclei import simulate_nuclei_image

    src = tmp_path / "in"
    src.mkdir()
    for i in range(4):
        tifffile.imwrite(src / f"a{i}.tif", simulate_nuclei_image(shape=(48, 48), n_nuclei=3, seed=i)[0])
    out = tmp_path / "out"
    first = run_batch_sync("segment", src, out, model=tiny_model, workers=0, tile=64)
    assert (first.processed, first.skipped) == (4, 0)
    tifffile.imwrite(src / "a1.tif", simulate_nuclei_image(shape=(48, 48), n_nuclei=3, seed=99)[0])  # new content
    (out / "labels" / "a2.tif").unlink()  # lost output
    second = run_batch_sync("segment", src, out, model=tiny_model, workers=0, tile=64)
    assert (second.processed, second.skipped) == (2, 2)
    assert (out / "labels" / "a2.tif").exists()
    # other settings must not silently replace results
    with pytest.raises(InputError, match="other settings"):
        run_batch_sync("segment", src, out, model=tiny_model, workers=0, tile=64, threshold=0.3)


def test_killed_cli_run_resumes_to_identical_outputs(tmp_path, images, reference_run, tiny_model, cluster):
    ref_out, _ = reference_run
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "napari_microseg.cli", "batch", "segment", "--model", str(tiny_model),
           "--input", str(images), "--out", str(out), "--scheduler", cluster.scheduler.address,
           "--tile", str(TILE), "--max-in-flight", "2", "--quiet"]
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    manifest = out / "manifest.jsonl"
    deadline = time.monotonic() + 120
    while _done_lines(manifest) < 3 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    n_at_kill = _done_lines(manifest)
    assert 3 <= n_at_kill < N_IMAGES, f"kill came too late or too early ({n_at_kill} done): {proc.stdout.read()!r}"
    # rerun (here through the API on the same cluster; the CLI calls the same generator)
    rerun = run_batch_sync("segment", images, out, model=tiny_model, scheduler=cluster.scheduler.address, tile=TILE)
    assert (rerun.processed, rerun.skipped, rerun.failed) == (N_IMAGES - n_at_kill, n_at_kill, 1)
    assert _done_lines(manifest) == N_IMAGES  # each item recorded once: the rerun redid only what was missing
    for name in ("objects.csv", "counts.csv"):
        assert (out / name).read_bytes() == (ref_out / name).read_bytes(), name
    ref_tifs = sorted(p.relative_to(ref_out) for p in (ref_out / "labels").rglob("*") if p.is_file())
    got_tifs = sorted(p.relative_to(out) for p in (out / "labels").rglob("*") if p.is_file())
    assert got_tifs == ref_tifs  # no temporary leftovers
    for rel in ref_tifs:
        np.testing.assert_array_equal(tifffile.imread(out / rel), tifffile.imread(ref_out / rel))


def test_closing_generator_cancels_and_shuts_down_own_cluster(tmp_path, images, tiny_model):
    import multiprocessing

    def children() -> set[int]:
        return {p.pid for p in multiprocessing.active_children()}

    others = children()  # e.g. the module's shared cluster
    out = tmp_path / "out"
    gen = run_batch("segment", images, out, model=tiny_model, workers=2, tile=TILE, heartbeat=0.1)
    for event in gen:
        if event.in_flight > 0:
            break
    assert len(children() - others) == 2  # the run's two worker processes
    gen.close()
    deadline = time.monotonic() + 30
    while children() - others and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not children() - others
    assert not (out / ".batch.lock").exists()
    assert _done_lines(out / "manifest.jsonl") < N_IMAGES


def test_zarr_stack_one_task_per_frame(tmp_path, tiny_model):
    import zarr

    from napari_microseg.inference.segment import segment
    from napari_microseg.io.models import load_model
    from napari_microseg.io.images import write_zarr
    from napari_microseg.simulate.nuclei import simulate_nuclei_timelapse

    movie = simulate_nuclei_timelapse(n_frames=3, shape=(48, 48), n_nuclei=4, seed=3).fluorescence
    write_zarr(tmp_path / "movie.zarr", movie, chunks=(1, 48, 48))
    out = tmp_path / "out"
    summary = run_batch_sync("segment", tmp_path / "movie.zarr", out, model=tiny_model, workers=0, tile=64)
    assert (summary.total, summary.processed) == (3, 3)
    store = zarr.open_array(str(out / "labels" / "movie.zarr"), mode="r")
    assert store.attrs["microseg_batch"]["complete"] is True
    loaded = load_model(tiny_model, device="cpu")
    counts = pd.read_csv(out / "counts.csv")
    assert list(counts["t"]) == [0, 1, 2] and set(counts["image"]) == {"movie.zarr"}
    for t in range(3):
        np.testing.assert_array_equal(store[t], segment(loaded, movie[t], tile=64).labels)
    # the [N] count divides by the median nucleus area of the whole movie, as `segment` does, not each
    # frame's own median (each frame is a task of its own)
    whole = segment(loaded, movie, tile=64).counts
    np.testing.assert_allclose(counts["count_by_area"], whole["count_by_area"], rtol=1e-5)
    records = Manifest(out / "manifest.jsonl").load()
    assert records["movie.zarr/t000001"]["checksum"] == sha256_array(np.asarray(zarr.open_array(
        str(tmp_path / "movie.zarr"), mode="r")[1]))
    again = run_batch_sync("segment", tmp_path / "movie.zarr", out, model=tiny_model, workers=0, tile=64)
    assert (again.processed, again.skipped) == (0, 3)


def test_track_batch_matches_run_tracking(tmp_path):
    from napari_microseg.simulate.nuclei import simulate_nuclei_timelapse
    from napari_microseg.tracking.track import run_tracking

    src = tmp_path / "stacks"
    src.mkdir()
    stacks = {}
    for i in range(2):
        sim = simulate_nuclei_timelapse(n_frames=4, shape=(64, 64), n_nuclei=4, seed=10 + i)
        stacks[f"movie{i}.tif"] = sim.labels
        tifffile.imwrite(src / f"movie{i}.tif", sim.labels)
    mask = stacks["movie0.tif"] > 0  # a boolean mask stack: tracked as its connected objects
    tifffile.imwrite(src / "mask.tif", mask)
    (src / "flat.tif").write_bytes(b"")  # empty file: fails, the others go on
    (src / "notes.txt").write_text("plate A")  # another type: left out, and said so
    out = tmp_path / "out"
    summary = run_batch_sync("track", src, out, workers=0)
    assert (summary.processed, summary.failed) == (3, 1)
    records = Manifest(out / "manifest.jsonl").load()
    assert "0/1 mask" in next(r for r in records.values() if r["input"].endswith("mask.tif"))["note"]
    run = json.loads((out / "batch_run.json").read_text())  # the run's own record: counts and tables
    assert (run["processed"], run["failed"], run["total"]) == (3, 1, 4) and run["tables"]["tracks"] == "tracks.csv"
    assert [Path(p).name for p in run["ignored_files"]] == ["notes.txt"] == [Path(p).name for p in summary.ignored]
    assert not any("note" in r for r in records.values() if r["input"].endswith("movie0.tif"))
    from napari_microseg.measure.labels import masks_to_labels

    stacks["mask.tif"] = masks_to_labels(mask)[0]
    assert "empty" in summary.failures[0]["reason"]
    tracks = pd.read_csv(out / "tracks.csv")
    assert list(tracks.columns[:8]) == ["track_id", "t", "y", "x", "parent_track_id", "root_track_id", "generation",
                                        "label"]
    for name, labels in stacks.items():
        expected = run_tracking(labels).table
        got = tracks[tracks["image"] == name].drop(columns="image").reset_index(drop=True)
        pd.testing.assert_frame_equal(got, expected[got.columns].reset_index(drop=True), check_dtype=False, rtol=1e-6)
        assert tifffile.imread(out / "tracks_labels" / name).max() == expected["track_id"].max()
    assert set(pd.read_csv(out / "counts.csv")["image"]) == set(stacks)
    summary = pd.read_csv(out / "track_summary.csv")
    assert set(summary["image"]) == set(stacks) and {"fate", "path_length_px"} <= set(summary.columns)


def test_batch_track_ctc_folders_score_as_the_single_run(tmp_path, capsys):
    """`batch track --ctc` writes a CTC folder per movie; `evaluate tracks` scores it as it scores
    `microseg track --ctc` on the same movie."""
    from napari_microseg.cli import main
    from napari_microseg.simulate.nuclei import simulate_nuclei_timelapse

    sim_dir = tmp_path / "sim"
    assert main(["simulate", "nuclei", "--out", str(sim_dir), "--frames", "5", "--nuclei", "6", "--seed", "3",
                 "--shape", "80", "80"]) == 0
    (tmp_path / "movies").mkdir()
    shutil.copy(sim_dir / "labels.tif", tmp_path / "movies" / "m1.tif")
    assert main(["batch", "track", "--input", str(tmp_path / "movies"), "--out", str(tmp_path / "batch"),
                 "--workers", "0", "--ctc"]) == 0
    assert (tmp_path / "batch" / "ctc_RES" / "m1" / "res_track.txt").is_file()
    assert main(["track", "--labels", str(sim_dir / "labels.tif"), "--out", str(tmp_path / "single"), "--ctc"]) == 0
    scores = []
    for pred in (tmp_path / "batch" / "ctc_RES" / "m1", tmp_path / "single" / "ctc_RES"):
        assert main(["evaluate", "tracks", "--gt", str(sim_dir), "--pred", str(pred), "--out", str(pred.parent / f"{pred.name}.csv")]) == 0
        scores.append(pd.read_csv(pred.parent / f"{pred.name}.csv").iloc[0])
    assert scores[0]["TRA"] == pytest.approx(scores[1]["TRA"], abs=1e-9) and scores[0]["TRA"] > 0.9


def test_inputs_added_to_a_batch_keep_their_names_and_all_failed_reruns_leave_no_stale_tables(tmp_path):
    """Run plate A, then plates A and B into the same folder: A's items are skipped (named as before,
    not from the new common folder). A rerun in which every item fails leaves no tables of the last run."""
    from napari_microseg.simulate.nuclei import simulate_nuclei_timelapse

    for plate, seed in (("plateA", 1), ("plateB", 2)):
        (tmp_path / "in" / plate).mkdir(parents=True)
        tifffile.imwrite(tmp_path / "in" / plate / "m.tif",
                         simulate_nuclei_timelapse(n_frames=3, shape=(48, 48), n_nuclei=3, seed=seed).labels)
    out = tmp_path / "out"
    first = run_batch_sync("track", [tmp_path / "in" / "plateA"], out, workers=0)
    assert first.processed == 1 and (out / "tracks_labels" / "m.tif").is_file()
    second = run_batch_sync("track", [tmp_path / "in" / "plateA", tmp_path / "in" / "plateB"], out, workers=0)
    assert (second.processed, second.skipped) == (1, 1), second
    assert sorted(p.relative_to(out).as_posix() for p in (out / "tracks_labels").rglob("*.tif")) == \
        ["tracks_labels/m.tif", "tracks_labels/plateB/m.tif"]
    assert set(pd.read_csv(out / "tracks.csv")["image"]) == {"m.tif", "plateB/m.tif"}
    # every item now fails: the tables of the earlier runs go (failures.csv says why)
    for plate in ("plateA", "plateB"):
        (tmp_path / "in" / plate / "m.tif").write_bytes(b"not a tiff any more")
    third = run_batch_sync("track", [tmp_path / "in" / "plateA", tmp_path / "in" / "plateB"], out, workers=0)
    assert third.failed == 2 and not (out / "tracks.csv").exists() and not (out / "counts.csv").exists()


def test_find_batch_inputs(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    for rel in ("a/x.tif", "b/x.tif", "b/y.tiff", "notes.txt", "a/.hidden.tif"):
        (tmp_path / rel).write_bytes(b"0")
    found = find_batch_inputs(tmp_path)
    assert [rel for _, rel in found] == ["a/x.tif", "b/x.tif", "b/y.tiff"]
    assert [rel for _, rel in find_batch_inputs(str(tmp_path / "*" / "*.tif"))] == ["a/x.tif", "b/x.tif"]
    # an output folder inside the input folder is never read back as input
    assert [rel for _, rel in find_batch_inputs(tmp_path, exclude=tmp_path / "b")] == ["x.tif"]
    # symbolic links keep their own names; two links to one file are two inputs
    (tmp_path / "links").mkdir()
    os.symlink(tmp_path / "a" / "x.tif", tmp_path / "links" / "A01.tif")
    os.symlink(tmp_path / "a" / "x.tif", tmp_path / "links" / "A02.tif")
    assert [rel for _, rel in find_batch_inputs(tmp_path / "links")] == ["A01.tif", "A02.tif"]
    # an earlier run's input folder names the inputs under it; one outside it is named from the common folder
    assert [rel for _, rel in find_batch_inputs(tmp_path / "a", root=tmp_path)] == ["a/x.tif"]
    assert [rel for _, rel in find_batch_inputs([tmp_path / "a", tmp_path / "b" / "y.tiff"], root=tmp_path / "b")] \
        == ["a/x.tif", "y.tiff"]
    # a batch folder from before input_root was recorded: its inputs give the folder
    from napari_microseg.batch.runner import _previous_input_root

    (tmp_path / "old_out").mkdir()
    (tmp_path / "old_out" / "batch_config.json").write_text(json.dumps({"inputs": [str(tmp_path / "a" / "x.tif"),
                                                                                     str(tmp_path / "b" / "x.tif")]}))
    assert _previous_input_root(tmp_path / "old_out") == str(tmp_path)
    (tmp_path / "b" / "x.fits").write_bytes(b"0")
    with pytest.raises(InputError, match="same outputs"):
        find_batch_inputs(tmp_path / "b")
    with pytest.raises(InputError, match="no images match"):
        find_batch_inputs(str(tmp_path / "*.zarr"))


def test_manifest_ignores_a_line_cut_by_a_crash(tmp_path):
    path = tmp_path / "manifest.jsonl"
    with Manifest(path) as m:
        m.append({"key": "a", "status": "done", "outputs": {}})
    with open(path, "a") as fh:
        fh.write('{"key": "b", "status": "do')  # killed mid-line
    assert set(Manifest(path).load()) == {"a"}
    with Manifest(path) as m:
        m.append({"key": "c", "status": "done", "outputs": {}})
    assert set(Manifest(path).load()) == {"a", "c"}
    assert json.loads(path.read_text().splitlines()[-1])["key"] == "c"


def test_autolabel_batch_matches_autolabel_fluorescence(tmp_path):
    from napari_microseg.autolabel.fluorescence import autolabel_fluorescence
    from napari_microseg.cli import main
    from napari_microseg.simulate.nuclei import simulate_nuclei_image

    src = tmp_path / "in"
    src.mkdir()
    images = {}
    for i in range(3):
        images[f"n{i}.tif"] = (simulate_nuclei_image(shape=(96, 96), n_nuclei=8, seed=i)[0] * 255).astype(np.uint8)
        tifffile.imwrite(src / f"n{i}.tif", images[f"n{i}.tif"])
    out = tmp_path / "out"
    assert main(["batch", "autolabel", "--input", str(src), "--out", str(out), "--workers", "0", "--quiet",
                 "--otsu-window", "31"]) == 0
    objects = pd.read_csv(out / "objects.csv")
    for name, image in images.items():
        expected = autolabel_fluorescence(image, otsu_window=31)
        np.testing.assert_array_equal(tifffile.imread(out / "labels" / name), expected)
        assert (objects["image"] == name).sum() == int(expected.max())
    # counts.csv has the columns segmentation counts have, with the [N] count by area per image
    counts = pd.read_csv(out / "counts.csv")
    assert list(counts.columns) == ["t", "count", "foreground_area", "count_by_area", "image"]
    for name in images:
        row = counts[counts["image"] == name].iloc[0]
        mine = objects[objects["image"] == name]
        assert row["count"] == len(mine) and row["foreground_area"] == mine["area"].sum()
        assert row["count_by_area"] == pytest.approx(mine["area"].sum() / mine["area"].median(), rel=1e-5)


def test_classify_batch_matches_classify_images(tmp_path):
    from napari_microseg.classify.predict import classify_images
    from napari_microseg.cli import main

    model = tmp_path / "clf.pt"
    assert main(["classify", "train", "images", "--simulated", "12", "--epochs", "1", "--batch-size", "12",
                 "--out", str(model), "--device", "cpu", "--threads", "1", "--seed", "1"]) == 0
    sim = tmp_path / "sim"
    assert main(["simulate", "response", "--n", "4", "--out", str(sim), "--seed", "5"]) == 0
    truth = pd.read_csv(sim / "classes.csv")
    box = [int(v) for v in truth[["crop_y0", "crop_x0", "crop_y1", "crop_x1"]].iloc[0]]
    out = tmp_path / "out"
    assert main(["batch", "classify", "--model", str(model), "--input", str(sim / "images"), "--out", str(out), "--workers", "0",
                 "--box", *map(str, box), "--threshold", "0.4", "--quiet"]) == 0
    flags = pd.read_csv(out / "flags.csv")
    assert list(flags.columns) == ["image", "probability_bad", "verdict", "threshold"]
    files = [p for p, _ in find_batch_inputs(sim / "images")]
    expected = classify_images(str(model), [tifffile.imread(p) for p in files], boxes=[box] * len(files), threshold=0.4)
    assert len(flags) == len(files) == 4
    np.testing.assert_allclose(flags["probability_bad"], expected["probability_bad"], rtol=1e-6)
    assert list(flags["verdict"]) == list(expected["verdict"])
    # the simulated folder itself, as 'classify images' reads it: its images, each with its integration mask
    assert main(["classify", "images", "--model", str(model), "--input", str(sim), "--out", str(tmp_path / "ci"),
                 "--threshold", "0.4"]) == 0
    assert main(["batch", "classify", "--model", str(model), "--input", str(sim), "--out", str(tmp_path / "whole"),
                 "--workers", "0", "--threshold", "0.4", "--quiet"]) == 0
    whole = pd.read_csv(tmp_path / "whole" / "flags.csv")
    single = pd.read_csv(tmp_path / "ci" / "flags.csv")
    assert len(whole) == 4 and all(Path(name).parent.name == "images" or "/" not in name for name in whole["image"])
    np.testing.assert_allclose(whole["probability_bad"], single["probability_bad"], rtol=1e-6)
    # a segmentation model is refused with a clear message
    with pytest.raises(InputError, match="classif"):
        run_batch_sync("classify", sim, tmp_path / "o2", model=model.parent / "missing.pt")


def test_cli_errors(tmp_path, images, tiny_model):
    from napari_microseg.cli import main

    for task in ("classify", "segment"):  # no model: argparse's one-line error (its usage says --model is required)
        with pytest.raises(SystemExit) as stopped:
            main(["batch", task, "--input", str(images), "--out", str(tmp_path / task)])
        assert stopped.value.code == 2 and not (tmp_path / task).exists()
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "thesis.docx").write_text("precious")
    assert main(["batch", "track", "--input", str(images), "--out", str(tmp_path / "busy"), "--workers", "0"]) == 2
    assert (tmp_path / "busy" / "thesis.docx").read_text() == "precious"
    with pytest.raises(InputError, match="no model"):
        run_batch_sync("autolabel", images, tmp_path / "a", model=tmp_path / "x.pt")
    with pytest.raises(InputError, match="segmentation model|segments images"):
        run_batch_sync("classify", images, tmp_path / "c2", model=tiny_model)


def _session_processes(sid: int) -> list[int]:
    """Pids of live processes in session ``sid`` (Linux /proc)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[3]) == sid and fields[0] != "Z":
                pids.append(int(entry.name))
    return pids


@pytest.mark.slow
def test_sigterm_stops_cli_and_its_local_cluster_then_rerun_completes(tmp_path, images, reference_run, tiny_model):
    ref_out, _ = reference_run
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "napari_microseg.cli", "batch", "segment", "--model", str(tiny_model),
           "--input", str(images), "--out", str(out), "--workers", "2", "--tile", str(TILE), "--quiet"]
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 300
    while _done_lines(out / "manifest.jsonl") < 2 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGTERM)  # the driver only, as a job scheduler would
    assert proc.wait(timeout=60) == 143  # the shell's code for SIGTERM
    deadline = time.monotonic() + 30
    while _session_processes(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _session_processes(proc.pid), "worker processes outlived the run"
    assert not (out / ".batch.lock").exists()
    n_done = _done_lines(out / "manifest.jsonl")
    assert n_done < N_IMAGES
    rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 1 and "corrupt" in rerun.stderr, rerun.stderr
    assert f"{N_IMAGES - n_done} processed, {n_done} skipped" in rerun.stdout
    for name in ("objects.csv", "counts.csv"):
        assert (out / name).read_bytes() == (ref_out / name).read_bytes(), name


def test_batch_takes_a_shipped_model_by_name(tmp_path):
    """The README's example: ``microseg batch segment --model nuclei_fluorescence ...``."""
    from napari_microseg.cli import main

    src = tmp_path / "in"
    src.mkdir()
    rng = np.random.default_rng(0)
    tifffile.imwrite(src / "a.tif", (rng.random((64, 64)) * 50).astype(np.uint8))
    assert main(["batch", "segment", "--model", "nuclei_fluorescence", "--input", str(src), "--out", str(tmp_path / "o"),
                 "--workers", "0", "--quiet"]) == 0
    assert (tmp_path / "o" / "objects.csv").is_file()


def test_big_tiffs_are_read_tile_by_tile_with_the_results_of_an_in_memory_read(tmp_path, tiny_model, monkeypatch):
    """A TIFF over LAZY_TIFF_BYTES (lowered here) is read lazily by every batch task, as by the single-file
    commands: segment and autolabel write its labels into a Zarr store chunk by chunk, track follows it frame
    by frame. Labels and tables equal those of the same files read into memory."""
    import zarr

    import napari_microseg.io.images as image_io
    from napari_microseg.simulate.nuclei import simulate_nuclei_timelapse

    sim = simulate_nuclei_timelapse(n_frames=3, shape=(80, 80), n_nuclei=5, seed=21)
    src = {"images": tmp_path / "images", "labels": tmp_path / "labels"}
    for folder in src.values():
        folder.mkdir()
    tifffile.imwrite(src["images"] / "movie.tif", (sim.fluorescence * 255).astype(np.uint8), tile=(32, 32))
    tifffile.imwrite(src["labels"] / "movie.tif", sim.labels)
    runs = {"segment": ("images", {"model": tiny_model, "tile": 64}), "autolabel": ("images", {}), "track": ("labels", {})}
    for task, (folder, kw) in runs.items():
        run_batch_sync(task, src[folder], tmp_path / f"{task}_eager", workers=0, **kw)
    reads = []
    original = image_io._tiff_level
    monkeypatch.setattr(image_io, "LAZY_TIFF_BYTES", 1000)
    monkeypatch.setattr(image_io, "_tiff_level", lambda series, level: reads.append(level) or original(series, level))
    for task, (folder, kw) in runs.items():
        summary = run_batch_sync(task, src[folder], tmp_path / f"{task}_lazy", workers=0, **kw)
        assert summary.processed == 1 and not summary.failures, summary.failures
    assert len(reads) == 3  # each task opened the TIFF lazily
    for task in ("segment", "autolabel"):
        eager, lazy = tmp_path / f"{task}_eager", tmp_path / f"{task}_lazy"
        np.testing.assert_array_equal(zarr.open_array(str(lazy / "labels" / "movie.zarr"), mode="r")[:],
                                      tifffile.imread(eager / "labels" / "movie.tif"))
        for table in ("objects.csv", "counts.csv"):
            pd.testing.assert_frame_equal(pd.read_csv(lazy / table), pd.read_csv(eager / table), check_dtype=False)
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "track_lazy" / "tracks_labels" / "movie.tif"),
                                  tifffile.imread(tmp_path / "track_eager" / "tracks_labels" / "movie.tif"))
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "track_lazy" / "tracks.csv"),
                                  pd.read_csv(tmp_path / "track_eager" / "tracks.csv"))

    # track with a model: the big image stack is segmented into a Zarr store and tracked from it
    monkeypatch.setattr(image_io, "LAZY_TIFF_BYTES", 1 << 40)
    run_batch_sync("track", src["images"], tmp_path / "segtrack_eager", model=tiny_model, tile=64, workers=0)
    monkeypatch.setattr(image_io, "LAZY_TIFF_BYTES", 1000)
    run_batch_sync("track", src["images"], tmp_path / "segtrack_lazy", model=tiny_model, tile=64, workers=0)
    eager, lazy = tmp_path / "segtrack_eager", tmp_path / "segtrack_lazy"
    np.testing.assert_array_equal(zarr.open_array(str(lazy / "labels" / "movie.zarr"), mode="r")[:],
                                  tifffile.imread(eager / "labels" / "movie.tif"))
    np.testing.assert_array_equal(tifffile.imread(lazy / "tracks_labels" / "movie.tif"),
                                  tifffile.imread(eager / "tracks_labels" / "movie.tif"))
    pd.testing.assert_frame_equal(pd.read_csv(lazy / "tracks.csv"), pd.read_csv(eager / "tracks.csv"))


def test_a_small_pyramidal_tiff_gives_tiff_labels_as_any_small_tiff(tmp_path, tiny_model):
    """A pyramidal TIFF is opened lazily for its levels, but one under the size limit is segmented in
    memory at full resolution: labels/<name>.tif, as before, not a Zarr store."""
    image = (np.random.default_rng(4).random((96, 96)) * 255).astype(np.uint8)
    src = tmp_path / "in"
    src.mkdir()
    with tifffile.TiffWriter(src / "slide.ome.tif") as tif:
        tif.write(image, subifds=1, tile=(32, 32), photometric="minisblack")
        tif.write(image[::2, ::2], subfiletype=1, tile=(32, 32), photometric="minisblack")
    tifffile.imwrite(src / "plain.tif", image)
    run_batch_sync("segment", src, tmp_path / "out", model=tiny_model, tile=64, workers=0)
    labels = tmp_path / "out" / "labels"
    assert sorted(p.name for p in labels.iterdir()) == ["plain.tif", "slide.ome.tif"]
    np.testing.assert_array_equal(tifffile.imread(labels / "slide.ome.tif"), tifffile.imread(labels / "plain.tif"))


def test_hdu_picks_the_fits_extension_in_batch_and_track(tmp_path, capsys):
    """A FITS file with two image HDUs (say, two amplifiers): by default the first is read; --hdu N
    reads the N-th, in `batch` (here autolabel) and in `track`."""
    from astropy.io import fits

    from napari_microseg.autolabel.fluorescence import autolabel_fluorescence
    from napari_microseg.cli import main
    from napari_microseg.simulate.nuclei import simulate_nuclei_image, simulate_nuclei_timelapse

    first = (simulate_nuclei_image(shape=(96, 96), n_nuclei=6, seed=1)[0] * 1000).astype(np.float32)
    second = (simulate_nuclei_image(shape=(96, 96), n_nuclei=10, seed=2)[0] * 1000).astype(np.float32)
    src = tmp_path / "fits"
    src.mkdir()
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(first), fits.ImageHDU(second)]).writeto(src / "two.fits")
    for hdu, image in ((None, first), (2, second)):
        out = tmp_path / f"out{hdu}"
        extra = [] if hdu is None else ["--hdu", str(hdu)]
        assert main(["batch", "autolabel", "--input", str(src), "--out", str(out), "--workers", "0", "--quiet"] + extra) == 0
        np.testing.assert_array_equal(tifffile.imread(out / "labels" / "two.tif"), autolabel_fluorescence(image))
    assert main(["batch", "autolabel", "--input", str(src), "--out", str(tmp_path / "bad"), "--workers", "0", "--quiet",
                 "--hdu", "7"]) == 1  # the item fails with its reason; the batch reports it
    assert "HDU 7 does not exist" in pd.read_csv(tmp_path / "bad" / "failures.csv")["reason"].iloc[0]

    movie = simulate_nuclei_timelapse(n_frames=3, shape=(64, 64), n_nuclei=4, seed=3).labels.astype(np.int32)
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(np.zeros_like(movie)), fits.ImageHDU(movie)]).writeto(tmp_path / "movie.fits")
    assert main(["track", "--labels", str(tmp_path / "movie.fits"), "--hdu", "2", "--out", str(tmp_path / "trk")]) == 0
    assert pd.read_csv(tmp_path / "trk" / "tracks.csv")["t"].nunique() == 3
    capsys.readouterr()
    assert main(["track", "--labels", str(tmp_path / "movie.fits"), "--out", str(tmp_path / "trk1")]) == 0  # HDU 1: empty
    assert "none of the 3 frames holds an object" in capsys.readouterr().err  # (the wrong HDU, say)


def test_batch_segment_of_ccd_frames_writes_clusters_as_segment_does(tmp_path, capsys):
    """A CCD class model in `batch segment`: the shape rules apply and clusters.csv is written, row
    for row as `microseg segment` writes it for each frame; other models refuse the rules once."""
    from napari_microseg.cli import main
    from napari_microseg.simulate.ccd import simulate_ccd_frame

    (tmp_path / "frames").mkdir()
    for i in range(2):
        tifffile.imwrite(tmp_path / "frames" / f"f{i}.tif", simulate_ccd_frame(shape=(128, 128), seed=20 + i, balanced=True).image)
    rules = ["--shape-rules", "--max-cluster-size", "20"]
    assert main(["batch", "segment", "--model", "ccd_classes", "--input", str(tmp_path / "frames"),
                 "--out", str(tmp_path / "batch"), "--workers", "0", *rules]) == 0
    merged = pd.read_csv(tmp_path / "batch" / "clusters.csv")
    assert set(merged["image"]) == {"f0.tif", "f1.tif"} and (merged["size_px"] <= 20).all()
    assert main(["segment", "--model", "ccd_classes", "--input", str(tmp_path / "frames" / "f1.tif"),
                 "--out", str(tmp_path / "single"), "--quiet", *rules]) == 0
    single = pd.read_csv(tmp_path / "single" / "clusters.csv")
    ours = merged[merged["image"] == "f1.tif"].drop(columns="image").reset_index(drop=True)
    pd.testing.assert_frame_equal(ours, single.drop(columns="image")[ours.columns], check_dtype=False, rtol=1e-5)
    capsys.readouterr()
    assert main(["batch", "segment", "--model", "nuclei_fluorescence", "--input", str(tmp_path / "frames"),
                 "--out", str(tmp_path / "nuclei"), "--workers", "0", "--shape-rules"]) == 2
    assert "CCD class models only" in capsys.readouterr().err


def test_batch_carries_the_movies_calibration_as_the_single_file_commands_do(tmp_path):
    """An ImageJ movie stating 0.5 um per pixel and 2 min per frame: batch track reports um and minutes
    (as `microseg track` does) and its label stacks keep the calibration, as batch segment's labels do."""
    from napari_microseg.io.images import read_image
    from napari_microseg.simulate.nuclei import simulate_nuclei_timelapse

    src = tmp_path / "movies"
    src.mkdir()
    sim = simulate_nuclei_timelapse(n_frames=4, shape=(64, 64), n_nuclei=4, seed=12)
    tifffile.imwrite(src / "calibrated.tif", sim.labels.astype(np.uint16), imagej=True, resolution=(2.0, 2.0),
                     metadata={"axes": "TYX", "unit": "micron", "finterval": 120})
    stated = {"pixel_size_um": 0.5, "frame_interval_min": 2.0}
    run_batch_sync("track", src, tmp_path / "tracked", workers=0)
    summary = pd.read_csv(tmp_path / "tracked" / "track_summary.csv")
    assert {"path_length_um", "duration_min"} <= set(summary.columns)
    np.testing.assert_allclose(summary["path_length_um"], summary["path_length_px"] * 0.5, rtol=1e-5)
    assert read_image(tmp_path / "tracked" / "tracks_labels" / "calibrated.tif").metadata["calibration"] == stated
    images = tmp_path / "images"
    images.mkdir()
    tifffile.imwrite(images / "calibrated.tif", sim.fluorescence.astype(np.float32), imagej=True, resolution=(2.0, 2.0),
                     metadata={"axes": "TYX", "unit": "micron", "finterval": 120})
    run_batch_sync("segment", images, tmp_path / "segmented", model="nuclei_fluorescence_fast", workers=0)
    assert read_image(tmp_path / "segmented" / "labels" / "calibrated.tif").metadata["calibration"] == stated
