"""Simulation dock widget: pick a domain, set its main parameters, Generate -> new layers.

Generation runs in a worker thread (progress bar, Stop); layers are added on the
GUI thread when it returns. Every result is a new layer; nothing is replaced.
"""

from __future__ import annotations

from typing import Any, Callable, Generator

import numpy as np
from magicgui.widgets import CheckBox, ComboBox, Container, PushButton, SpinBox

from ..progress import Progress
from ._base import MicrosegDock, unique_layer_name

LABEL_COLOURS = {0: "transparent"}


def _nuclei_form() -> Container:
    return Container(widgets=[
        SpinBox(name="n_frames", label="frames", value=20, min=1, max=2000),
        SpinBox(name="size", label="size (px)", value=256, min=64, max=4096, step=32),
        SpinBox(name="n_nuclei", label="nuclei", value=30, min=1, max=5000),
        SpinBox(name="stage_shift", label="stage shift sd (px)", value=0, min=0, max=50),
        CheckBox(name="enter_leave", label="enter / leave", value=True),
    ])


def _ccd_form() -> Container:
    return Container(widgets=[
        SpinBox(name="n_images", label="frames", value=1, min=1, max=500),
        SpinBox(name="size", label="size (px)", value=256, min=64, max=4096, step=64),
        CheckBox(name="balanced", label="balanced layout", value=False),
    ])


def _response_form() -> Container:
    return Container(widgets=[SpinBox(name="n_images", label="images (balanced)", value=16, min=2, max=5000, step=2)])


def _liposome_form() -> Container:
    return Container(widgets=[
        SpinBox(name="size", label="size (px)", value=512, min=128, max=4096, step=64),
        SpinBox(name="n_particles", label="particles", value=30, min=1, max=500),
    ])


def _profile_form() -> Container:
    return Container(widgets=[
        SpinBox(name="n", label="particles", value=64, min=2, max=100000),
        ComboBox(name="task", label="task", choices=["hole", "chirality"], value="hole"),
        SpinBox(name="n_views", label="views", value=2, min=1, max=8),
    ])


def _generate_nuclei(p: dict, seed: int) -> Generator[Progress, None, list[tuple]]:
    from ..simulate.nuclei import simulate_nuclei_timelapse

    yield Progress(0, 1, "simulating nuclei time-lapse ...")
    sim = simulate_nuclei_timelapse(
        n_frames=p["n_frames"], shape=(p["size"], p["size"]), n_nuclei=p["n_nuclei"], seed=seed,
        stage_shift_sd=float(p["stage_shift"]), enter_leave=p["enter_leave"],
    )
    yield Progress(1, 1, "done")
    tracks = sim.tracks
    graph = {int(c): [int(pa)] for c, pa in tracks.groupby("track_id")["parent_track_id"].first().items() if pa}
    return [
        (sim.fluorescence, {"name": "sim nuclei (fluorescence)", "colormap": "gray"}, "image"),
        (sim.phase, {"name": "sim nuclei (phase)", "visible": False}, "image"),
        (sim.labels, {"name": "sim nuclei labels", "opacity": 0.4}, "labels"),
        (tracks[["track_id", "t", "y", "x"]].to_numpy(float), {"name": "sim nuclei tracks (truth)", "graph": graph, "tail_length": 10}, "tracks"),
    ]


def _generate_ccd(p: dict, seed: int) -> Generator[Progress, None, list[tuple]]:
    from ..simulate.ccd import simulate_ccd_frame

    images, classes = [], []
    n = p["n_images"]
    for i in range(n):
        frame = simulate_ccd_frame(shape=(p["size"], p["size"]), seed=seed + i, balanced=p["balanced"])
        images.append(frame.image)
        classes.append(frame.classes)
        yield Progress(i + 1, n, f"CCD frame {i + 1}/{n}")
    image, cls = (np.stack(images), np.stack(classes)) if n > 1 else (images[0], classes[0])
    return [
        (image, {"name": "sim CCD (ADC)", "colormap": "gray"}, "image"),
        (cls, {"name": "sim CCD classes", "opacity": 0.6,
               "features": {"label": [0, 1, 2, 3], "class": ["background", "glowing", "hot pixel", "cluster"]}}, "labels"),
    ]


def _generate_response(p: dict, seed: int) -> Generator[Progress, None, list[tuple]]:
    from ..simulate.response import build_balanced_set

    yield Progress(0, 1, "simulating response images ...")
    items = build_balanced_set(p["n_images"], seed=seed)
    yield Progress(1, 1, "done")
    images = np.stack([it.image for it in items])
    artefacts = np.stack([np.where(it.artefact_mask, 1, np.where(it.integration_mask, 2, 0)).astype(np.uint8) for it in items])
    return [
        (images, {"name": "sim response images", "colormap": "magma",
                  "metadata": {"label": [it.label for it in items], "subclass": [it.subclass for it in items],
                               "crop_box": [list(it.params["crop_box"]) for it in items]}}, "image"),
        (artefacts, {"name": "sim response areas (1 artefact, 2 integration)", "opacity": 0.4}, "labels"),
    ]


def _generate_liposomes(p: dict, seed: int) -> Generator[Progress, None, list[tuple]]:
    from ..simulate.liposomes import simulate_liposome_image

    yield Progress(0, 1, "simulating liposomes ...")
    sim = simulate_liposome_image(shape=(p["size"], p["size"]), n_particles=p["n_particles"], seed=seed)
    yield Progress(1, 1, "done")
    return [
        (sim.image, {"name": "sim TEM liposomes", "colormap": "gray"}, "image"),
        (sim.labels, {"name": "sim liposome labels", "opacity": 0.35, "features": sim.classes}, "labels"),
    ]


def _generate_profiles(p: dict, seed: int) -> Generator[Progress, None, list[tuple]]:
    from ..simulate.nanoparticles import render_particle, simulate_profiles

    yield Progress(0, 1, "simulating STEM profiles ...")
    sim = simulate_profiles(p["n"], task=p["task"], n_views=p["n_views"], seed=seed)
    shown = min(len(sim.polygons), 64)
    renders = np.stack([render_particle(sim.polygons[i]) for i in range(shown)])
    yield Progress(1, 1, "done")
    names = [sim.class_names[int(c)] for c in sim.labels[:shown]]
    return [
        (renders, {"name": f"sim nanoparticles ({p['task']})", "colormap": "gray", "metadata": {"class": names}}, "image"),
        (sim.profiles[:shown], {"name": "sim profiles (particle, view, point)", "visible": False}, "image"),
    ]


DOMAINS: dict[str, tuple[Callable[[], Container], Callable[[dict, int], Generator]]] = {
    "nuclei time-lapse [N]": (_nuclei_form, _generate_nuclei),
    "CCD frames [C]": (_ccd_form, _generate_ccd),
    "response images [R]": (_response_form, _generate_response),
    "TEM liposomes [T]": (_liposome_form, _generate_liposomes),
    "STEM nanoparticles [P]": (_profile_form, _generate_profiles),
}


class SimulationWidget(MicrosegDock):
    title = "Simulation"
    description = (
        "Generate labelled synthetic data for five domains (nuclei time-lapse, response images, "
        "TEM liposomes, STEM profiles, CCD frames). Results arrive as new image, labels and tracks layers."
    )

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__(napari_viewer)
        self.domain = ComboBox(label="domain", choices=list(DOMAINS), value=list(DOMAINS)[0])
        self.seed = SpinBox(label="seed", value=0, min=0, max=2**31 - 1)
        self.forms = {name: make() for name, (make, _) in DOMAINS.items()}
        self.generate_button = PushButton(text="Generate")
        self.container = Container(widgets=[self.domain, *self.forms.values(), self.seed, self.generate_button])
        self.body.addWidget(self.container.native)
        self.domain.changed.connect(self._show_form)
        self.generate_button.changed.connect(self.generate)
        self._show_form()

    def _show_form(self, *_: Any) -> None:
        for name, form in self.forms.items():
            form.visible = name == self.domain.value

    def parameters(self) -> dict:
        return {w.name: w.value for w in self.forms[self.domain.value]}

    def generate(self, *_: Any) -> Any:
        """Start generating the chosen domain's sample in a worker."""
        _, make_generator = DOMAINS[self.domain.value]
        params, seed = self.parameters(), int(self.seed.value)
        return self.start(lambda: make_generator(params, seed), self._add_layers, label=f"simulating {self.domain.value}")

    def _add_layers(self, layers: list[tuple]) -> None:
        for data, kwargs, kind in layers:
            kwargs = dict(kwargs)
            kwargs["name"] = unique_layer_name(self.viewer, kwargs["name"])
            getattr(self.viewer, f"add_{kind}")(data, **kwargs)
        self.show_message(f"added {len(layers)} layers (seed {int(self.seed.value)})")
