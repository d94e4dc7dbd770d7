"""Simulation dock widget: pick a domain, set its main parameters, Generate -> new layers.

Generation runs in a worker thread (progress bar, Stop); layers are added on the
GUI thread when it returns. Every result is a new layer; nothing is replaced.
"""

from __future__ import annotations

from typing import Any, Callable, Generator

from magicgui.widgets import CheckBox, ComboBox, Container, PushButton, SpinBox

from ..simulate.samples import generate_ccd, generate_liposomes, generate_nuclei, generate_profiles, generate_response
from ._base import MicrosegDock, class_colormap, contrast_per_image, display_labels, unique_layer_name

LABEL_COLOURS = {0: "transparent"}


def _nuclei_form() -> Container:
    return Container(widgets=[
        SpinBox(name="n_frames", label="frames", value=20, min=1, max=2000,
                tooltip="time points of the movie (T)"),
        SpinBox(name="size", label="size (px)", value=256, min=64, max=4096, step=32,
                tooltip="side of the square field of view, pixels"),
        SpinBox(name="n_nuclei", label="nuclei", value=30, min=1, max=5000,
                tooltip="nuclei per field, counted by their centres (divisions and deaths keep the count near it; "
                        "nuclei cut by the border are labelled too, so frames hold ~10 % more objects)"),
        SpinBox(name="stage_shift", label="stage shift sd (px)", value=0, min=0, max=50,
                tooltip="standard deviation (px) of each frame's whole-field offset from frame 0, as a microscope stage "
                        "moving back to a position (jumps between two frames are ~1.4x this); 0: none"),
        CheckBox(name="enter_leave", label="enter / leave", value=True,
                 tooltip="nuclei may drift into and out of the field of view during the movie"),
    ])


def _ccd_form() -> Container:
    return Container(widgets=[
        SpinBox(name="n_images", label="frames", value=1, min=1, max=500,
                tooltip="CCD exposures to make (a stack of frames)"),
        SpinBox(name="size", label="size (px)", value=256, min=64, max=4096, step=64,
                tooltip="side of the square frame, pixels"),
        CheckBox(name="balanced", label="balanced layout", value=False,
                 tooltip="frames with as many glowing, hot-pixel and cluster pixels as a network needs to learn each class (the natural layout is mostly background)"),
        CheckBox(name="one_sensor", label="exposures of one CCD", value=False,
                 tooltip="the same hot pixels and glowing band in every frame, charge and noise drawn per frame: "
                         "what the Segmentation dock's 'CCD hot pixels repeat' compares"),
    ])


def _response_form() -> Container:
    return Container(widgets=[SpinBox(name="n_images", label="images (balanced)", value=16, min=2, max=5000, step=2,
                                                tooltip="response images to make, half good and half bad")])


def _liposome_form() -> Container:
    return Container(widgets=[
        SpinBox(name="size", label="size (px)", value=512, min=128, max=4096, step=64,
                tooltip="side of the square micrograph, pixels"),
        SpinBox(name="n_particles", label="particles", value=30, min=1, max=500,
                tooltip="particles asked for; they may not overlap, so a crowded field places fewer (said when it does)"),
    ])


def _profile_form() -> Container:
    return Container(widgets=[
        SpinBox(name="n", label="particles", value=64, min=2, max=100000),
        ComboBox(name="task", label="task", choices=["hole", "chirality"], value="hole",
                 tooltip="hole: particles with or without a hole; chirality: left- or right-handed particles"),
        SpinBox(name="n_views", label="views", value=2, min=1, max=8,
                tooltip="projections of each particle, at different tilt angles"),
    ])


#: the ``microseg simulate`` domain of each of the dock's (recorded with the layers, as params.json's ``domain``)
SIMULATE_DOMAIN = {"nuclei time-lapse [N]": "nuclei", "CCD frames [C]": "ccd", "response images [R]": "response",
                   "TEM liposomes [T]": "liposomes", "STEM nanoparticles [P]": "nanoparticles"}

DOMAINS: dict[str, tuple[Callable[[], Container], Callable[[dict, int], Generator]]] = {
    "nuclei time-lapse [N]": (_nuclei_form, generate_nuclei),
    "CCD frames [C]": (_ccd_form, generate_ccd),
    "response images [R]": (_response_form, generate_response),
    "TEM liposomes [T]": (_liposome_form, generate_liposomes),
    "STEM nanoparticles [P]": (_profile_form, generate_profiles),
}


def _as_simulate_options(params: dict) -> dict:
    """The dock's settings as ``microseg simulate``'s options (as a params.json's ``cli`` names them)."""
    names = {"n_images": "n", "n_views": "views", "n_particles": "particles"}
    options = {names.get(key, key): value for key, value in params.items() if key != "size"}
    if "size" in params:  # square images of that side
        options["shape"] = [int(params["size"]), int(params["size"])]
    return options


class SimulationWidget(MicrosegDock):
    title = "Simulation"
    description = (
        "Generate labelled synthetic data for five domains (nuclei time-lapse, response images, "
        "TEM liposomes, STEM profiles, CCD frames). Results arrive as new image, labels and tracks layers."
    )

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__(napari_viewer)
        self.domain = ComboBox(label="domain", choices=list(DOMAINS), value=list(DOMAINS)[0])
        self.seed = SpinBox(label="seed", value=0, min=0, max=2**31 - 1,
                            tooltip="the same seed and settings make the same data, here and with `microseg simulate`")
        self.forms = {name: make() for name, (make, _) in DOMAINS.items()}
        self.generate_button = PushButton(text="Generate", tooltip="simulate in the background; new layers when done")
        self.container = Container(widgets=[self.domain, *self.forms.values(), self.seed, self.generate_button])
        self.body.addWidget(self.container.native)
        self.domain.changed.connect(self._show_form)
        self.generate_button.changed.connect(self.generate)
        self.run_buttons = (self.generate_button,)
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
        record = {"domain": SIMULATE_DOMAIN[self.domain.value], "seed": seed, "cli": _as_simulate_options(params)}
        return self.start(lambda: _for_display(make_generator(params, seed)),
                          lambda layers: self._add_layers(layers, seed, record),
                          label=f"simulating {SIMULATE_DOMAIN[self.domain.value]}")

    def _add_layers(self, layers: list[tuple], seed: int, record: dict | None = None) -> None:
        """Add the generated layers; ``seed``: the one they were made with (the form may show another by now);
        ``record``: the simulation's domain, seed and settings (as a params.json has them), kept in each
        layer's metadata under ``simulation`` (the Classification dock tells a model's own training samples)."""
        notes = []
        for data, kwargs, kind in contrast_per_image(layers):
            kwargs = dict(kwargs)
            kwargs["metadata"] = {**kwargs.get("metadata", {}), "simulation_seed": seed,  # the layer says how to remake it
                                  **({"simulation": record} if record else {})}
            if kwargs.get("metadata", {}).get("simulation_note"):
                notes.append(kwargs["metadata"]["simulation_note"])
            kwargs["name"] = unique_layer_name(self.viewer, kwargs["name"])
            if kind == "labels" and isinstance(kwargs.get("colormap"), dict):  # class colours: drawn without numba
                kwargs["colormap"] = class_colormap(sum(key is not None for key in kwargs["colormap"]))
            getattr(self.viewer, f"add_{kind}")(data, **kwargs)
        self.show_message(f"added {len(layers)} layers (seed {seed})" + "".join(f"; {n}" for n in notes))


def _for_display(generator: Any) -> Any:
    """Run a sample generator (in the worker) and give its labels layers the smallest dtype napari
    draws without compiling (see :func:`display_labels`)."""
    layers = yield from generator
    return [(display_labels(data) if kind == "labels" else data, kwargs, kind) for data, kwargs, kind in layers]
