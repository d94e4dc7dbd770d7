"""Hunt 39: a batch into an earlier run's folder with other inputs dropped that run's rows from the merged tables."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile

MODEL = "nuclei_fluorescence_fast"


def _run_cli(*args) -> int:
    from napari_microseg.cli import main

    return main([str(a) for a in args])


def _nuclei(folder: Path, names: list[str], seed: int) -> None:
    from napari_microseg.simulate.nuclei import simulate_nuclei_image

    folder.mkdir(parents=True, exist_ok=True)
    for k, name in enumerate(names):
        image, _ = simulate_nuclei_image(shape=(96, 96), n_nuclei=6, seed=seed * 10 + k)
        tifffile.imwrite(folder / name, np.round(image * 4000).astype(np.uint16))


def _images(table: Path) -> list[str]:
    return sorted(set(pd.read_csv(table)["image"]))


def test_batch_with_other_inputs_into_an_earlier_out_is_refused_instead_of_dropping_its_rows(tmp_path, capsys):
    """`batch segment --input plate1 --out res`, then `--input plate2 --out res`: exit 0, "1 processed", and
    counts.csv / objects.csv held plate2's rows only; plate1's vanished (its labels and shards still there),
    with no --overwrite and no word. Refused now before any work, naming the inputs left out and the choices;
    both folders given go on (plate1's done items skipped); --overwrite replaces the tables with this run's."""
    _nuclei(tmp_path / "plate1", ["a.tif", "b.tif"], seed=1)
    _nuclei(tmp_path / "plate2", ["c.tif"], seed=2)
    res = tmp_path / "res"
    common = ("--model", MODEL, "--workers", "0", "--quiet")
    assert _run_cli("batch", "segment", "--input", tmp_path / "plate1", "--out", res, *common) == 0
    assert _images(res / "counts.csv") == ["a.tif", "b.tif"]
    tables = {name: (res / name).read_bytes() for name in ("counts.csv", "objects.csv", "batch_run.json")}
    config = (res / "batch_config.json").read_bytes()
    capsys.readouterr()

    # another folder into the same --out: refused, nothing written
    assert _run_cli("batch", "segment", "--input", tmp_path / "plate2", "--out", res, *common) == 2
    err = capsys.readouterr().err
    assert "a.tif, b.tif" in err and "leave out" in err and "--input" in err and "--overwrite" in err, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert {name: (res / name).read_bytes() for name in tables} == tables
    assert (res / "batch_config.json").read_bytes() == config
    assert not (res / "labels" / "plate2").exists()

    # a pattern selecting only some of the earlier inputs: refused too, naming the one left out
    assert _run_cli("batch", "segment", "--input", tmp_path / "plate1" / "a*.tif", "--out", res, *common) == 2
    err = capsys.readouterr().err
    assert "b.tif" in err and "a.tif" not in err.split("still in place:")[1], err

    # both given: plate1's done items skipped, the tables hold all three
    assert _run_cli("batch", "segment", "--input", tmp_path / "plate1", tmp_path / "plate2", "--out", res,
                    *common) == 0
    run = json.loads((res / "batch_run.json").read_text())
    assert (run["processed"], run["skipped"]) == (1, 2)
    assert _images(res / "counts.csv") == ["a.tif", "b.tif", "plate2/c.tif"]
    assert set(pd.read_csv(res / "objects.csv")["image"]) == {"a.tif", "b.tif", "plate2/c.tif"}

    # --overwrite is refused too: plate2's c.tif, named from its own folder, would replace plate1's labels of that
    # name, and plate1's items would stay "done" in the manifest (review of the first fix)
    before = _images(res / "counts.csv")
    assert _run_cli("batch", "segment", "--input", tmp_path / "plate2", "--out", res, *common, "--overwrite") == 2
    err = capsys.readouterr().err
    assert "leave out" in err and "delete" in err and "--overwrite" in err, err
    assert _images(res / "counts.csv") == before


def test_an_input_deleted_since_still_just_leaves_the_tables(tmp_path):
    """The same input folder with one of its files deleted since: the rerun goes on as before, the tables hold
    the remaining inputs (nothing to give in --input: the file is gone)."""
    from napari_microseg.batch.runner import run_batch_sync

    _nuclei(tmp_path / "plate", ["a.tif", "b.tif"], seed=3)
    out = tmp_path / "out"
    assert run_batch_sync("segment", tmp_path / "plate", out, model=MODEL, workers=0).processed == 2
    (tmp_path / "plate" / "b.tif").unlink()
    again = run_batch_sync("segment", tmp_path / "plate", out, model=MODEL, workers=0)
    assert (again.processed, again.skipped) == (0, 1)
    assert _images(out / "counts.csv") == ["a.tif"]


@pytest.mark.gui
def test_segmentation_dock_batch_into_an_earlier_out_with_another_folder_says_why(make_napari_viewer, tmp_path,
                                                                                   wait_worker):
    """The dock's "Run batch" with another folder into an earlier run's output folder: one line in the dock
    naming the images done before, the tables untouched (they lost those rows without a word)."""
    from napari_microseg.widgets.segmentation import SegmentationWidget

    _nuclei(tmp_path / "plate1", ["a.tif"], seed=4)
    _nuclei(tmp_path / "plate2", ["c.tif"], seed=5)
    viewer = make_napari_viewer(show=False)
    widget = SegmentationWidget(viewer)
    widget.model_choice.value = MODEL
    widget.batch_workers.value = 0
    widget.batch_input.value, widget.batch_out.value = str(tmp_path / "plate1"), str(tmp_path / "out")
    wait_worker(widget.run_batch())
    assert "1 done" in widget.status.text(), widget.status.text()
    counts = (tmp_path / "out" / "counts.csv").read_bytes()
    widget.batch_input.value = str(tmp_path / "plate2")
    wait_worker(widget.run_batch())
    said = widget.status.text()
    assert "a.tif" in said and "leave out" in said and "Traceback" not in said, said
    assert (tmp_path / "out" / "counts.csv").read_bytes() == counts
