"""Shared dock-widget machinery: a worker runner with progress bar, Stop button and error line.

Long work is a generator (from the Qt-free core) that yields progress events;
:meth:`MicrosegDock.start` runs it in ``napari.qt.threading.thread_worker``,
updates the progress bar from each yielded event on the GUI thread, and hands the
generator's return value to a callback on the GUI thread (the only place that
touches layers). Stop calls ``worker.quit()``, which acts at the next yield.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import re
import threading
import time
import traceback
import weakref
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable, Generator, Sequence

import numpy as np
from qtpy.QtCore import QEvent, QSize, Qt, QTimer
from qtpy.QtWidgets import (QFrame, QHBoxLayout, QLabel, QProgressBar, QPushButton, QScrollArea, QSizePolicy, QVBoxLayout,
                            QWidget)

from napari.qt.threading import thread_worker

from ..colours import CLASS_COLOURS, class_colour
from ..progress import StepRate
from ..errors import MicrosegError
from ..io.atomic import unwritable_reason  # noqa: F401 - the docks check result files with it
from ..measure.tables import ids_features, label_features  # noqa: F401 - the docks take them from here


_STOPPED = object()  # returned by a run that was stopped

#: width of a layer picker or any other combo box, in characters: longer layer names and model paths are
#: elided, not widening the dock
LAYER_PICKER_CHARS = 18

#: width of a combo box's drop-down arrow and frame beside its text, px
COMBO_ARROW_PX = 40

#: shown when Stop came before a training's first epoch finished (the trainer then saves nothing)
NO_MODEL_MESSAGE = "stopped before the first epoch finished: no model saved"


#: runs going on (any dock): while one runs, the objects alive when it started are out of the garbage
#: collector's reach (see :func:`_hold_gc`)
_RUNS_HOLDING_GC = [0]
_GC_LOCK = threading.Lock()

#: files that runs in progress will write (resolved paths): :func:`free_name` counts them as taken
_FILES_BEING_WRITTEN: set[str] = set()

#: what a closed dock left for the next dock of its kind opened in the same viewer (napari's close button
#: destroys a dock, and the Plugins menu builds a new one): viewer -> {dock class name: (the closed dock's
#: id, its state)}; see :meth:`MicrosegDock.take_over_closed_dock`
_LEFT_ON_CLOSE: "weakref.WeakKeyDictionary[Any, dict[str, tuple[int, dict]]]" = weakref.WeakKeyDictionary()


def _hold_gc() -> None:
    """Move the objects alive now out of the garbage collector's reach while a run goes on: napari's,
    Qt's and the scientific stack's long-lived objects (millions once torch is loaded) would otherwise be
    walked by every full collection a worker's allocations trigger, holding the interpreter lock (0.2 s
    freezes of the window during training: the 99th percentile gap of the event loop in
    tests/test_gui_training.py went from 0.21 s to 0.06 s). :func:`_release_gc` gives them back when
    the last run ends: frozen for good, a layer deleted later would never be freed (layers sit in
    reference cycles)."""
    with _GC_LOCK:
        _RUNS_HOLDING_GC[0] += 1
        gc.freeze()


def _release_gc() -> None:
    with _GC_LOCK:
        _RUNS_HOLDING_GC[0] = max(0, _RUNS_HOLDING_GC[0] - 1)
        if not _RUNS_HOLDING_GC[0]:
            gc.unfreeze()


#: a closed layer holding at least this many bytes of data in memory is freed during a run (a full
#: collection, 0.3-1.3 s of the GUI thread with a run's ~600,000 frozen objects); smaller ones when runs end
COLLECT_CLOSED_BYTES = 64 * 2**20
#: ms after a big layer closed before the collection: layers closed together are freed by one collection
COLLECT_DELAY_MS = 300


def collect_closed_layer(event: Any = None) -> None:
    """A big layer (:data:`COLLECT_CLOSED_BYTES`) closed while a run holds the collector (:func:`_hold_gc`):
    its memory is freed now, not when every run has ended (a 400 MB movie closed during an hour-long training
    stayed in memory: layers sit in reference cycles, and frozen objects are never collected). One collection
    for the layers closed together, whichever docks hear it (one per closed layer froze the window for 2.5 s
    when 5 were removed at once)."""
    layer = getattr(event, "value", None)
    with _GC_LOCK:
        if not _RUNS_HOLDING_GC[0] or layer is None or _COLLECTION_PENDING[0] or _layer_bytes(layer) < COLLECT_CLOSED_BYTES:
            return
        _COLLECTION_PENDING[0] = True
    from qtpy.QtCore import QTimer

    QTimer.singleShot(COLLECT_DELAY_MS, _collect_now)  # after the event (it holds the layer while emitted)


def _layer_bytes(layer: Any) -> int:
    """Bytes of a layer's data held in memory (numpy arrays; a lazy dask / zarr layer's on disk count 0)."""
    data = getattr(layer, "data", None)
    # a pyramid's levels (napari's MultiScaleData is a sequence, but no list or tuple)
    arrays = list(data) if getattr(layer, "multiscale", False) or isinstance(data, (list, tuple)) else [data]
    return int(sum(a.nbytes for a in arrays if isinstance(a, np.ndarray)))


def _collect_now() -> None:
    with _GC_LOCK:
        _COLLECTION_PENDING[0] = False
        if _RUNS_HOLDING_GC[0]:
            gc.unfreeze()
            gc.collect()
            gc.freeze()


#: whether a collection for closed layers is scheduled (:func:`collect_closed_layer`)
_COLLECTION_PENDING = [False]


def refreeze_if_running() -> None:
    """Freeze again what a run's start missed (torch imported in the background after Train was pressed)."""
    with _GC_LOCK:
        if _RUNS_HOLDING_GC[0]:
            gc.freeze()


class _WorkerFailure(Exception):
    """A worker's ``RuntimeError`` (torch's out-of-memory errors among them) carried out of the generator as
    another type: superqt takes a ``RuntimeError`` for its worker having been deleted and ends the run
    without ``errored`` or ``finished``, which left the dock busy for good."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


def model_choices(choices: Sequence[str]) -> list[tuple[str, str]]:
    """(shown text, value) of a model picker's choices: a file by its name first, then its folder (a long path
    cut at the box's right edge hid the name: a model and its -ft1 fine-tune looked the same); shipped names
    and "model file ..." as they are. The value is the choice itself."""
    def shown(choice: str) -> str:
        path = Path(choice)
        return f"{path.name}  ({path.parent})" if path.is_absolute() else choice

    return [(shown(str(c)), c) for c in choices]


def being_written(path: Path) -> bool:
    """Whether a run in progress (in any dock) will write ``path``."""
    return str(Path(path).resolve()) in _FILES_BEING_WRITTEN


def _unless_deleted(callback: Callable[..., None]) -> Callable[..., None]:
    """A worker callback that does nothing once the dock's Qt widgets are gone (the viewer was
    closed while the work ran) instead of raising "wrapped C/C++ object ... has been deleted"."""

    @functools.wraps(callback)
    def guarded(*args: Any) -> None:
        try:
            callback(*args)
        except RuntimeError as err:
            if "has been deleted" not in str(err):
                raise

    return guarded


class _VerticalScrollArea(QScrollArea):
    """Scrolls its content up and down only: as wide as the content wants (plus the scroll bar),
    but only a few lines tall at least, so a tall dock still fits a small screen."""

    MIN_HEIGHT_PX = 56
    #: the preferred width asks for no more than this (a wrapped header or a plot would ask for much
    #: more, squeezing the canvas on a laptop), though never less than the content's minimum width
    PREFERRED_MAX_WIDTH_PX = 480

    def _bar_width(self) -> int:
        return self.verticalScrollBar().sizeHint().width()

    def sizeHint(self) -> QSize:
        inner, least = self.widget().sizeHint(), self.widget().minimumSizeHint()
        width = max(least.width(), min(inner.width(), self.PREFERRED_MAX_WIDTH_PX))
        return QSize(width + self._bar_width(), inner.height())

    def minimumSizeHint(self) -> QSize:
        inner = self.widget().minimumSizeHint()
        return QSize(inner.width() + self._bar_width(), min(inner.height(), self.MIN_HEIGHT_PX))


def _room_in_thread_pool() -> None:
    """Let a run start now, not queue behind the other docks' runs: Qt's global thread pool (the one
    napari's workers use) has as many threads as cores, 2 here, so a Track of under a second waited
    silently behind a training and a fine-tune (its dock busy) until one of them ended."""
    from qtpy.QtCore import QThreadPool

    pool = QThreadPool.globalInstance()
    if pool.activeThreadCount() >= pool.maxThreadCount():
        pool.setMaxThreadCount(pool.activeThreadCount() + 1)


def _stop_recording(state: dict) -> None:
    """Disconnect the recorders of edits :meth:`MicrosegDock._record_edits_while_closed` connected."""
    for emitter, callback in state.get("recorders", []):
        with contextlib.suppress(Exception):
            emitter.disconnect(callback)
    for layer_ref, wrappers in state.get("undo_recorders", []):  # the layer's own undo / redo again (the wrappers
        layer = layer_ref()  # held the recorder and, through it, what the closed dock kept: a tracked run's stacks)
        for name, wrapper in wrappers:
            if layer is not None and vars(layer).get(name) is wrapper:
                with contextlib.suppress(Exception):
                    delattr(layer, name)
    state["recorders"], state["undo_recorders"] = [], []


class MicrosegDock(QWidget):
    """Base for the plugin's dock widgets.

    Subclasses put their controls into ``self.body`` (a QVBoxLayout) and call
    :meth:`start` with a generator factory. Progress, Stop and errors are shared.
    The header and body scroll (``self.scroll``), so a dock fits a laptop screen; the
    progress bar, Stop and the message line stay pinned below them, always visible.
    """

    title = ""
    description = ""
    #: attributes (results, undo history, training set, ...) a closed dock hands to the next dock of its kind
    #: opened in the same viewer, with its form's values and result lines: closing a dock by mistake (its
    #: close button) and opening it again from the Plugins menu lost the results ("nothing to export")
    kept_on_close: tuple[str, ...] = ()

    def __init__(self, napari_viewer: Any, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        # napari hands a dock opened from the Plugins menu a proxy of the viewer (PublicOnlyProxy) that wraps
        # every layer anew each time one is read: "is this the result layer?" (``is``, ``id``, weak references)
        # never held there, so a painted layer was overwritten and an earlier result exported as the newest.
        # The dock keeps the viewer the proxy wraps (its public API is all it uses).
        self.viewer = getattr(napari_viewer, "__wrapped__", napari_viewer)
        self._viewer_connections: list[tuple[Any, Callable]] = []  # see connect_viewer_event
        self.viewer.layers.events.removed.connect(collect_closed_layer)  # (a function: no dock held by it)
        self._following_viewer = True
        self._docked = False  # has been in a window: a later parent of None means it was closed
        self._successor: Any = None  # (weak) the dock that took this closed dock's state: see take_over_closed_dock
        self._handed_over: tuple[dict, dict] = ({}, {})  # the closed dock's attributes and form when this one took them
        self.worker = None
        # the buttons that start work in a worker: greyed out while one runs (one run at a time)
        self.run_buttons: tuple[Any, ...] = ()
        # the magicgui widgets that choose layers by name (see follow_layers)
        self.layer_pickers: tuple[Any, ...] = ()
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 6)
        self.content = QWidget()
        layout = QVBoxLayout(self.content)
        layout.setContentsMargins(6, 6, 6, 6)
        header = QLabel(f"<b>{self.title}</b><br>{self.description}")
        header.setWordWrap(True)
        header.setTextFormat(Qt.RichText)
        layout.addWidget(header)
        self.body = QVBoxLayout()
        layout.addLayout(self.body)
        layout.addStretch(1)
        self.scroll = _VerticalScrollArea()
        self.scroll.setWidgetResizable(True)
        self.scroll.setFrameShape(QFrame.NoFrame)
        self.scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)  # its minimum width fits the content
        self.scroll.setWidget(self.content)
        outer.addWidget(self.scroll, 1)
        footer = QVBoxLayout()
        footer.setContentsMargins(6, 0, 6, 0)
        outer.addLayout(footer)
        self.footer = footer
        row = QHBoxLayout()
        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.progress.setFormat("idle")
        self.stop_button = QPushButton("Stop")
        self.stop_button.setEnabled(False)
        self.stop_button.clicked.connect(self.stop)
        row.addWidget(self.progress, 1)
        row.addWidget(self.stop_button)
        footer.addLayout(row)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(Qt.TextSelectableByMouse)
        footer.addWidget(self.status)

    def grow_with_dock(self, widget: QWidget) -> None:
        """Give ``widget`` (a results table, already in ``self.body``) the dock's spare height, which
        otherwise sits empty below the controls: a tall dock shows more rows."""
        self.body.setStretchFactor(widget, 1)
        for i in range(self.body.indexOf(widget)):  # the controls above keep their rows' height: while the table
            other = self.body.itemAt(i).widget()  # is hidden (no results yet) they were spread over the dock's height
            if other is not None:
                other.setSizePolicy(other.sizePolicy().horizontalPolicy(), QSizePolicy.Maximum)
        content = self.content.layout()
        content.setStretchFactor(self.body, 1)
        content.setStretch(content.count() - 1, 0)  # the trailing spacer no longer takes it

    def pin_above_progress(self, widget: QWidget) -> None:
        """Put ``widget`` (a live plot) in the pinned footer, just above the progress bar and Stop,
        so it stays in view however far the controls are scrolled."""
        self.footer.insertWidget(0, widget)

    def event(self, event: Any) -> bool:
        # napari asks a dock widget for its size when it docks it, before showing it: the controls must be
        # settled by then, or an unelided model path sets the dock's first width (800 px)
        if event.type() in (QEvent.Polish, QEvent.ParentChange):
            self._settle_controls()
        if event.type() == QEvent.ParentChange:
            self._follow_viewer(self.parent() is not None or not self._docked)
            self._docked = self._docked or self.parent() is not None
        return super().event(event)

    def connect_viewer_event(self, emitter: Any, callback: Callable) -> None:
        """Connect ``callback`` to a viewer event ``emitter`` for as long as the dock is in the window:
        a dock taken out of it (its close button: napari un-parents it) stops following the viewer
        (no previews or picker refreshes for a dock nobody sees), and follows it again if docked again."""
        emitter.connect(callback)
        self._viewer_connections.append((emitter, callback))

    def _follow_viewer(self, follow: bool) -> None:
        if follow == self._following_viewer:
            return
        for emitter, callback in self._viewer_connections:
            emitter.connect(callback) if follow else emitter.disconnect(callback)
        self._following_viewer = follow
        if not follow:
            self.stop()  # nobody can see (or stop) a closed dock's run: it winds down as after Stop
            self.dock_closed()
            self._leave_state()
        else:  # docked again: its own state, left when it was closed, is its own again (no new dock takes it)
            left = _LEFT_ON_CLOSE.get(self.viewer, {})
            if left.get(type(self).__name__, (None,))[0] == id(self):
                del left[type(self).__name__]

    def _form_values(self) -> dict[str, Any]:
        """The values of the dock's magicgui controls (not its buttons), by attribute name: layer pickers
        last (setting one may move another control)."""
        from magicgui.widgets.bases import BaseValueWidget, ButtonWidget

        values = {name: widget.value for name, widget in vars(self).items()  # (a FileEdit's too)
                  if isinstance(widget, BaseValueWidget) and not isinstance(widget, ButtonWidget)}
        pickers = {name for name, widget in vars(self).items() if any(widget is p for p in self.layer_pickers)}
        return {**{k: v for k, v in values.items() if k not in pickers}, **{k: v for k, v in values.items() if k in pickers}}

    def layers_followed(self) -> list:
        """The layers whose edits the dock follows (its result layers, the labels it tracked): while it is
        closed, their paint, new data and undo are recorded and replayed to the dock that takes its state
        (:meth:`_record_edits_while_closed`, :attr:`edit_handlers`)."""
        return []

    #: the dock's methods that follow a layer's edits (called with an event whose ``source`` is the layer)
    edit_handlers: tuple[str, ...] = ()

    def _leave_state(self) -> None:
        """Keep :attr:`kept_on_close`, the form's values and the status line for the next dock of this kind
        opened in the viewer; the edits made meanwhile in :meth:`layers_followed` are recorded for it. Called
        when the dock is closed, and again when a run it was winding down ends before another dock took it."""
        if not self.kept_on_close:
            return
        left = _LEFT_ON_CLOSE.setdefault(self.viewer, {})
        earlier = left.get(type(self).__name__)
        edited = {}
        if earlier is not None and earlier[0] == id(self):  # (a run that ended since: the edits recorded stay)
            edited = earlier[1]["edited"]
            _stop_recording(earlier[1])
        state = {"attributes": {name: getattr(self, name) for name in self.kept_on_close if hasattr(self, name)},
                 "form": self._form_values(), "status": (self.status.text(), self.status.styleSheet()),
                 "edited": edited, "dock": weakref.ref(self)}
        self._record_edits_while_closed(state)
        left[type(self).__name__] = (id(self), state)

    def _record_edits_while_closed(self, state: dict) -> None:
        """Record in ``state["edited"]`` the layers of :meth:`layers_followed` painted, given new data or
        undone while nobody follows them (the closed dock ignores its own handlers): a Tracking dock opened
        again overwrote the paint made meanwhile, as if nothing had been painted."""
        from napari.layers import Labels

        edited = state["edited"]  # id -> the layer, weakly (one closed meanwhile is let go)

        def record(event: Any) -> None:  # (holds the edited layers only, never what the dock kept)
            source = getattr(event, "source", None)
            if source is not None:
                edited[id(source)] = weakref.ref(source)

        connections, undo_wrappers = [], []
        for layer in self.layers_followed():
            if layer is None or layer not in self.viewer.layers:
                continue
            for emitter in (layer.events.paint, layer.events.data):
                emitter.connect(record)
                connections.append((emitter, record))
            if isinstance(layer, Labels):
                undo_wrappers.append((weakref.ref(layer), watch_undo(layer, record)))
        state["recorders"], state["undo_recorders"] = connections, undo_wrappers

    def take_over_closed_dock(self) -> bool:
        """At the end of a subclass's ``__init__``: take the results and form values a closed dock of this kind
        left in this viewer (:attr:`kept_on_close`); :meth:`state_taken_over` then reconnects them, and the
        edits made in its layers while it was closed are replayed (:attr:`edit_handlers`). A run the closed dock
        is still winding down (Stop at its closing: a fine-tune saving its model) hands its end over too
        (:meth:`_run_ended_while_closed`). False (and nothing changed) when no dock was left closed."""
        left = _LEFT_ON_CLOSE.get(self.viewer, {}).pop(type(self).__name__, None)
        if left is None:
            return False
        state = left[1]
        _stop_recording(state)
        self._apply_form(state["form"])
        for name, value in state["attributes"].items():
            setattr(self, name, value)
        self.state_taken_over()
        for ref in state["edited"].values():  # painted while the dock was closed: as if it had followed them
            layer = ref()
            if layer is not None and layer in self.viewer.layers:
                for handler in self.edit_handlers:
                    getattr(self, handler)(SimpleNamespace(source=layer))
        if not self.status.text() and state["status"][0]:  # (nothing of its own to say: the closed dock's last word)
            self.status.setStyleSheet(state["status"][1])
            self.status.setText(state["status"][0])
        closed = state["dock"]()
        if closed is not None:  # a run it winds down, or one its own closed predecessor winds down, ends here
            closed._successor = weakref.ref(self)
            if closed.busy:  # (what it held then, to tell what the run's end changed; let go once it ended)
                self._handed_over = ({name: getattr(closed, name) for name in self.kept_on_close
                                      if hasattr(closed, name)}, closed._form_values())
        return True

    def _apply_form(self, values: dict) -> None:
        for name, value in values.items():
            widget = getattr(self, name, None)
            with contextlib.suppress(Exception):  # a choice no longer offered (a layer closed since): the default stays
                if widget is not None and widget.value != value:
                    widget.value = value

    def _run_ended_while_closed(self) -> None:
        """A run this dock wound down after its closing has ended: what it changed (a model saved, chosen) goes
        to the dock that took its state, or into the state left for the next one."""
        if self._following_viewer:
            return
        successor = self._successor() if self._successor is not None else None
        if successor is None:
            left = _LEFT_ON_CLOSE.get(self.viewer, {}).get(type(self).__name__)
            if left is not None and left[0] == id(self):
                self._leave_state()
            return
        attributes, form = successor._handed_over
        successor._handed_over = ({}, {})  # (it held the results of the hand-over: a tracked run's stacks)
        changed = {name: getattr(self, name) for name in attributes if getattr(self, name) is not attributes[name]}
        now = self._form_values()
        form_changed = {name: value for name, value in now.items() if form.get(name) != value}
        status = (self.status.text(), self.status.styleSheet())
        while True:  # to the dock that holds the state now: the successor, or its own successor if it was closed too
            for name, value in changed.items():
                setattr(successor, name, value)
            successor._apply_form(form_changed)
            later = successor._successor() if successor._successor is not None else None
            if successor._following_viewer or later is None:
                break
            successor = later
        if not successor._following_viewer:  # closed, its state not taken yet: the state it left gets the run's end
            left = _LEFT_ON_CLOSE.get(successor.viewer, {}).get(type(successor).__name__)
            if left is not None and left[0] == id(successor):
                successor.status.setStyleSheet(status[1])
                successor.status.setText(status[0])
                successor._leave_state()
            return
        if changed:
            successor.state_taken_over()
        successor.status.setStyleSheet(status[1])  # the run's own last word
        successor.status.setText(status[0])

    def state_taken_over(self) -> None:
        """Called after :meth:`take_over_closed_dock` set the closed dock's attributes: subclasses follow their
        result layers' edits again and show the results (tables, lines)."""

    def dock_closed(self) -> None:
        """Called when the dock is taken out of the window (after its viewer events are disconnected);
        subclasses stop their own timers here."""

    def sizeHint(self) -> QSize:  # noqa: D102 - Qt's
        self._settle_controls()
        return super().sizeHint()

    def _settle_controls(self) -> None:
        """Wrap the labels and elide the combo boxes of the controls (all built by now); idempotent."""
        # result lines (counts, summaries) get long after a run: wrapped, they never widen the
        # content past the dock and push its right edge out of view
        # (only what is not settled yet: each setting asks for a new layout pass, and sizeHint calls this)
        for label in self.content.findChildren(QLabel):
            if not label.wordWrap():
                label.setWordWrap(True)
        from qtpy.QtWidgets import QComboBox

        for combo in self.content.findChildren(QComboBox):  # a long model path or layer name is elided, too
            if combo.minimumWidth() > 0:
                continue
            combo.setSizeAdjustPolicy(QComboBox.AdjustToMinimumContentsLengthWithIcon)
            combo.setMinimumContentsLength(LAYER_PICKER_CHARS)
            # napari's style sheet sizes a combo box by its current text, whatever the policy: an explicit
            # minimum width (that of LAYER_PICKER_CHARS characters and the arrow) takes precedence in layouts
            combo.setMinimumWidth(combo.fontMetrics().horizontalAdvance("X" * LAYER_PICKER_CHARS) + COMBO_ARROW_PX)

    def showEvent(self, event: Any) -> None:  # noqa: N802 - Qt's name
        self._settle_controls()
        # a layout that changes later (widgets shown, texts set) asks for a new fit
        for widget in [self.content, *self.content.findChildren(QWidget)]:
            if widget.layout() is not None:
                widget.installEventFilter(self)
        self._fit_minimum_width()
        # once shown, the controls are laid out for good (elided pickers, wrapped labels): measured again
        # then, the minimum is often narrower (the Auto-label dock: 475 -> 414 px)
        QTimer.singleShot(0, self._fit_minimum_width)
        super().showEvent(event)

    def eventFilter(self, watched: Any, event: Any) -> bool:  # noqa: N802 - Qt's name
        if event.type() == QEvent.LayoutRequest and self.isVisible():
            QTimer.singleShot(0, self._fit_minimum_width)  # after the layout has settled
        return super().eventFilter(watched, event)

    def _fit_minimum_width(self) -> None:
        """The dock area may give less width than the scroll area's size hint asks for; an explicit minimum
        width (the controls' minimum plus the scroll bar) keeps the right edge in view."""
        self.scroll.setMinimumWidth(self.content.minimumSizeHint().width() + self.scroll._bar_width() + 4)

    # -- layer pickers ----------------------------------------------------
    def follow_layers(self, *pickers: Any) -> None:
        """Keep the layer pickers (magicgui ComboBox / Select whose choices are layer names) in step
        with the viewer: their choices are refreshed when a layer is added, removed or renamed, and a
        chosen layer that is renamed stays chosen under its new name."""
        self.layer_pickers = pickers
        from qtpy.QtWidgets import QComboBox

        for picker in pickers:  # a long layer name must not widen the dock past the screen's edge
            if isinstance(picker.native, QComboBox):
                picker.native.setSizeAdjustPolicy(QComboBox.AdjustToMinimumContentsLengthWithIcon)
                picker.native.setMinimumContentsLength(LAYER_PICKER_CHARS)
                # the box cuts a long name's end ("X segmented" and "X segmented [2]" looked alike): the whole
                # name as the box's tooltip
                picker.native.currentTextChanged.connect(picker.native.setToolTip)
                picker.native.setToolTip(picker.native.currentText())
        self._known_layer_names = {id(layer): layer.name for layer in self.viewer.layers}
        events = self.viewer.layers.events
        for event in (events.inserted, events.removed, events.renamed):
            self.connect_viewer_event(event, self._refresh_layer_pickers)

    def _refresh_layer_pickers(self, *_: Any) -> None:
        current = {id(layer): layer.name for layer in self.viewer.layers}
        renamed = {old: current[key] for key, old in self._known_layer_names.items()
                   if key in current and current[key] != old}
        self._known_layer_names = current
        for picker in self.layer_pickers:
            chosen = picker.value
            picker.reset_choices()
            if isinstance(chosen, (list, tuple)):  # a Select: several layers
                picker.value = [v for v in (renamed.get(c, c) for c in chosen) if v in picker.choices]
            elif chosen in renamed and renamed[chosen] in picker.choices:
                picker.value = renamed[chosen]

    def chosen_layer(self, name: Any, what: str = "image") -> Any:
        """The viewer's layer called ``name``; InputError (a message for the dock) when no layer is
        chosen or it has been removed or renamed since."""
        from ..errors import InputError

        if not name:
            raise InputError(f"Choose the {what} layer.")
        if name not in self.viewer.layers:
            raise InputError(f"the {what} layer '{name}' is no longer in the viewer: choose it again")
        layer = self.viewer.layers[name]
        shape = tuple(getattr(layer.data, "shape", ())) if type(layer).__name__ == "Image" and not layer.multiscale else ()
        if len(shape) == 3 and shape[-1] == 2 and min(shape[:2]) >= 8 and not getattr(layer, "rgb", False):
            # napari's PNG reader opens grey + alpha so: rows taken for frames of 2 px ("labelled 256 frames")
            raise InputError(f"'{name}' is a grey image with an alpha channel, shape {shape}, which napari shows as "
                             f"{shape[0]} frames of {shape[1]} x 2 px: drop the alpha (in napari's console: "
                             f"viewer.layers['{name}'].data = viewer.layers['{name}'].data[..., 0]) or save it as TIFF")
        return layer

    # -- messages ---------------------------------------------------------
    def show_message(self, text: str) -> None:
        self.status.setStyleSheet("")
        self.status.setText(text)

    def show_error(self, text: str) -> None:
        """Show a one-line error in the dock (red) instead of a traceback dialog; the progress bar of an
        earlier run no longer says "done" beside it."""
        self.status.setStyleSheet("color: #ff6b6b;")
        self.status.setText(text)
        if self.worker is None and self.progress.format() in ("done", "stopped", "failed"):
            self.progress.setRange(0, 1)
            self.progress.setValue(0)
            self.progress.setFormat("idle")

    # -- work -------------------------------------------------------------
    @property
    def busy(self) -> bool:
        return self.worker is not None

    def start(
        self,
        make_generator: Callable[[], Generator[Any, None, Any]],
        on_done: Callable[[Any], None],
        on_event: Callable[[Any], None] | None = None,
        label: str = "working",
        cooperative_stop: threading.Event | None = None,
        stop_message: str = "Stopping at the next step ...",
        on_failed: Callable[[], None] | None = None,
        stopped_message: str = "stopped; nothing was changed",
        writes: Sequence[Path] = (),
        finished_counts: bool = False,
    ) -> Any:
        """Run ``make_generator()`` in a worker thread; return the worker.

        ``on_event`` receives every yielded event on the GUI thread; ``on_done``
        receives the generator's return value on the GUI thread (not called
        when the run was stopped or failed). Stop closes the generator at its
        next event and discards the run, unless ``cooperative_stop`` is given:
        then Stop sets that event, the generator winds down by itself (a trainer
        keeps its best model) and ``on_done`` gets what it returns. ``on_failed`` is called on the GUI
        thread after a failure's message is shown; ``stopped_message`` is shown after a Stop (say what
        a run that keeps its finished parts kept). ``writes``: files the run will write, counted as taken
        by :func:`free_name` until it ends (another dock's run picks another name). ``finished_counts``: a
        run whose generator returned is done even if Stop was pressed meanwhile (it wrote its files; "not
        written" was said of a complete CTC folder when Stop came as the export ended).

        Closing the dock (or the viewer window while napari goes on, as in Jupyter) stops the run as
        Stop does.
        """
        if self.busy:
            self.show_error("Already running: press Stop first.")
            return None

        stop_requested = threading.Event()
        self._stop_requested = stop_requested
        self._cooperative_stop = cooperative_stop
        self._stop_message = stop_message
        outcome = {"state": "done"}
        inner: dict[str, Any] = {}
        # taken out when the run starts: napari keeps the worker (and so this function's closure) for as long
        # as the window, and make_generator's closure holds the layer's data (a closed movie stayed in memory)
        job = {"make": make_generator}
        del make_generator

        @thread_worker(ignore_errors=True)  # errors are shown in the dock by errored(), never re-raised
        def run() -> Generator[Any, None, Any]:
            # Stop is checked here, in the worker thread, between events: the inner generator is then
            # closed in this thread, so its clean-up (e.g. shutting down a Dask cluster) runs off the GUI
            # thread and always runs (superqt's quit() would only stop iterating, never close it).
            try:
                gen = job.pop("make")()
            except RuntimeError as err:  # superqt takes a bare RuntimeError for a deleted worker: no end signal
                raise _WorkerFailure(err) from err
            inner["gen"] = gen
            try:
                while True:
                    if stop_requested.is_set():
                        gen.close()
                        return _STOPPED
                    try:
                        event = next(gen)
                    except StopIteration as done:
                        return done.value
                    except RuntimeError as err:
                        raise _WorkerFailure(err) from err
                    yield event
            finally:
                gen.close()

        worker = run()
        writing = {str(Path(path).resolve()) for path in writes}
        _FILES_BEING_WRITTEN.update(writing)
        _hold_gc()

        def dock_destroyed(*_: Any) -> None:  # the window closed with napari going on: nobody can Stop it
            (cooperative_stop or stop_requested).set()

        self.destroyed.connect(dock_destroyed)

        def aborted() -> None:
            # napari quits every worker when the viewer closes: superqt then stops iterating without
            # closing the generator. Closed here, in the worker thread (a direct connection), the work
            # winds down as after Stop: a trainer keeps its best model and restores its settings.
            outcome["state"] = "stopped"
            gen = inner.get("gen")
            if gen is not None:
                try:
                    gen.close()
                except Exception:  # noqa: BLE001 - the viewer is closing: nothing to show it in
                    traceback.print_exc()

        worker.aborted.connect(aborted, Qt.DirectConnection)
        self.worker = worker
        self.progress.setRange(0, 0)  # busy indicator until the first event
        self.progress.setFormat(label)
        self._show_busy(True)
        self.show_message(f"{label} ...")

        rate = StepRate()

        # the bar's last update; the latest event held back since; whether a timer will show it
        shown: dict[str, Any] = {"at": 0.0, "pending": None, "timer": False}

        def show_progress(event: Any) -> None:
            done, total = getattr(event, "done", None), getattr(event, "total", None)
            if done is not None and total:
                self.progress.setRange(0, int(total))
                self.progress.setValue(int(done))
                left = rate.seconds_left(int(done), int(total))
                eta = f"  eta {left:.0f}s" if left is not None else ""
                self.progress.setFormat(f"{label} %v/%m{eta}")
            msg = getattr(event, "message", "")
            if msg:
                self.show_message(msg)
            shown["at"] = time.perf_counter()

        def show_held_back() -> None:
            shown["timer"] = False
            if shown["pending"] is None or self.worker is not worker:  # (not after the run's end: its message stays)
                return
            wait = PROGRESS_INTERVAL_S - (time.perf_counter() - shown["at"])
            if wait > 0.005:  # an event was shown meanwhile: this one's turn comes an interval after it
                shown["timer"] = True
                QTimer.singleShot(int(wait * 1000) + 1, _unless_deleted(show_held_back))
                return
            event, shown["pending"] = shown["pending"], None
            show_progress(event)

        def yielded(event: Any) -> None:
            # the bar and message at most every PROGRESS_INTERVAL_S: each repaints at once, and one event per
            # simulated image (70 a second) held the window in bursts of 0.5-1.6 s; the latest one held back is
            # shown when the interval is over, a count's last step at once
            done, total = getattr(event, "done", None), getattr(event, "total", None)
            last_step = done is not None and total and done >= total
            if last_step or time.perf_counter() - shown["at"] >= PROGRESS_INTERVAL_S:
                shown["pending"] = None
                show_progress(event)
            else:
                shown["pending"] = event
                if not shown["timer"]:
                    shown["timer"] = True
                    wait = PROGRESS_INTERVAL_S - (time.perf_counter() - shown["at"])
                    QTimer.singleShot(max(1, int(wait * 1000) + 1), _unless_deleted(show_held_back))
            if on_event is not None:
                on_event(event)

        def returned(value: Any) -> None:
            if value is _STOPPED or (stop_requested.is_set() and not finished_counts):  # stopped, even during its last step
                outcome["state"] = "stopped"
                self.show_message(stopped_message)
                return
            try:
                on_done(value)
            except MicrosegError as err:
                self.show_error(str(err))
            except Exception as err:  # noqa: BLE001 - never a traceback dialog
                if "has been deleted" in str(err):  # the dock's window closed while it ran: its files are written
                    return
                traceback.print_exc()
                self.show_error(f"{type(err).__name__}: {err}")

        def errored(err: Exception) -> None:
            from ..cli import _decoding_error  # (the command line's test: a damaged file or Zarr chunk)

            outcome["state"] = "failed"
            if isinstance(err, _WorkerFailure):
                err = err.error
            if isinstance(err, MicrosegError):
                self.show_error(str(err))
            elif "out of memory" in str(err).lower():
                self.show_error("The GPU ran out of memory: lower the patch size or batch size, "
                                "or choose device 'cpu' (slower, but it fits) and run again.")
            elif _decoding_error(err):  # as the command line says it, not a codec's bare RuntimeError
                self.show_error(f"cannot decode the layer's data ({type(err).__name__}: {err}): a damaged or "
                                "incompletely copied file or Zarr store?")
            else:
                traceback.print_exception(err)
                self.show_error(f"{type(err).__name__}: {err}")
            if on_failed is not None:
                on_failed()

        def finished() -> None:
            _FILES_BEING_WRITTEN.difference_update(writing)
            _release_gc()
            with contextlib.suppress(RuntimeError, TypeError):  # (the dock may be gone)
                self.destroyed.disconnect(dock_destroyed)
            self.worker = None
            self._cooperative_stop = None
            self._show_busy(False)
            state = outcome["state"]
            if state == "done" and cooperative_stop is not None and cooperative_stop.is_set():
                state = "stopped"
            self.progress.setRange(0, 1)
            self.progress.setValue(1 if state == "done" else 0)
            self.progress.setFormat(state)
            self._after_run()
            self._run_ended_while_closed()
            # napari keeps every worker for as long as the window (its task list): the dock's slots, and the
            # layers and arrays their closures hold, are let go (a closed 400 MB movie stayed in memory)
            for signal, slot in slots:
                with contextlib.suppress(RuntimeError, TypeError):
                    signal.disconnect(slot)
            slots.clear()
            inner.clear()
            job.clear()

        slots = [(worker.yielded, _unless_deleted(yielded)), (worker.returned, _unless_deleted(returned)),
                 (worker.errored, _unless_deleted(errored)), (worker.finished, _unless_deleted(finished)),
                 (worker.aborted, aborted)]
        for signal, slot in slots[:4]:
            signal.connect(slot)
        _room_in_thread_pool()
        worker.start()
        return worker

    def _after_run(self) -> None:
        """Called on the GUI thread when any run of this dock has ended (done, stopped or failed),
        once the dock is free again; docks override it to start work that waited for the run."""

    def _show_busy(self, busy: bool) -> None:
        """While a run is going only Stop is live among the run controls; afterwards the reverse."""
        self.stop_button.setEnabled(busy)
        for button in self.run_buttons:
            button.enabled = not busy

    def stop(self) -> None:
        """Ask the running work to stop: at its next progress event (its generator is closed in the
        worker), or, for a run started with ``cooperative_stop``, by setting that event."""
        if self.worker is None:
            return
        self.show_message(self._stop_message)
        if getattr(self, "_cooperative_stop", None) is not None:
            self._cooperative_stop.set()
        else:
            self._stop_requested.set()


#: the least time between two updates of a dock's progress bar and message, s (see ``MicrosegDock.start``)
PROGRESS_INTERVAL_S = 0.1


def dock_action(fallback: Any = None) -> Callable:
    """Decorate a quick GUI-thread button handler (an export, an edit): bad input or a file-system
    failure becomes one red line in the dock and the handler returns ``fallback`` (a callable is
    called for a fresh value), instead of an exception escaping into Qt."""

    def decorate(method: Callable) -> Callable:
        @functools.wraps(method)
        def wrapper(self: "MicrosegDock", *args: Any, **kwargs: Any) -> Any:
            try:
                return method(self, *args, **kwargs)
            except MicrosegError as err:
                self.show_error(str(err))
            except OSError as err:
                where = f" {err.filename}" if getattr(err, "filename", None) else ""
                self.show_error(f"cannot write{where}: {err.strerror or err}")
            return fallback() if callable(fallback) else fallback

        return wrapper

    return decorate


def field_path(value: Any, what: str = "folder") -> Path:
    """A file field's path as the user means it: ``~`` is the home folder (magicgui keeps it literally: a
    folder called "~" was made in napari's working folder); InputError for an empty field (magicgui shows
    it as ".", which wrote into the working folder)."""
    from ..errors import InputError

    text = str(value if value is not None else "").strip()
    if text in ("", "."):
        raise InputError(f"Choose the {what} (the field is empty).")
    return Path(text).expanduser()


def chosen_model_path(choice: str, file_value: Any, file_choice: str) -> Path:
    """The model a combo box (a model name, or ``file_choice``) and its file field point at;
    InputError when the file field is left empty or the model is neither a file nor shipped."""
    from ..errors import InputError
    from ..pretrained import resolve_model

    if choice == file_choice:
        chosen = Path(str(file_value)).expanduser()
        if chosen == Path(".") or chosen.is_dir():  # the file field left empty (magicgui shows ".")
            raise InputError("Choose a model file (.pt), or one of the models in the list.")
        return resolve_model(str(chosen))
    return resolve_model(choice or "")


#: the layer metadata key of a Segmentation dock stack's ``{id: (t, frame_label)}`` as segmented
FRAME_LABELS_KEY = "frame_labels"


def frame_label_map(layer: Any) -> dict[int, tuple[int | None, int]] | None:
    """For a stack the Segmentation dock made (ids unique across its frames), each id's frame and that
    frame's own id (its features' ``t`` and ``frame_label``, the label of that run's ``objects.csv``):
    ``{id: (t, frame_label)}`` (t None when the features have none); None for other layers. Tables made
    from the layer carry it, so that they join ``objects.csv``. The run's own map, kept in the layer's
    metadata (:data:`FRAME_LABELS_KEY`), comes first: an object erased, exported and brought back by
    undo is no longer in the features but is still the run's."""
    features = getattr(layer, "features", None)
    found: dict[int, tuple[int | None, int]] = {}
    if features is not None and len(features) and {"label", "frame_label"} <= set(features.columns):
        frames = features["t"].astype("int64") if "t" in features.columns else [None] * len(features)
        found = {int(label): (None if t is None else int(t), int(own)) for label, t, own
                 in zip(features["label"].astype("int64"), frames, features["frame_label"].astype("int64"))}
    kept = (getattr(layer, "metadata", None) or {}).get(FRAME_LABELS_KEY)
    if isinstance(kept, dict):
        found.update({int(label): (None if t is None else int(t), int(own)) for label, (t, own) in kept.items()})
    return found or None


def watch_undo(layer: Any, callback: Callable[[Any], None]) -> list[tuple[str, Callable]]:
    """Call ``callback(event)`` (``event.source`` the layer) after the Labels ``layer``'s undo and redo
    (Ctrl+Z / Shift+Ctrl+Z), which change its data without a ``paint`` or ``data`` event. The layer is
    held weakly (a closed layer is freed as before)."""
    from types import SimpleNamespace

    ref = weakref.ref(layer)
    installed = []
    for name in ("undo", "redo"):
        original = getattr(type(layer), name)

        def replay(*args: Any, _original: Callable = original, **kwargs: Any) -> Any:
            target = ref()
            if target is None:
                return None
            before = _history_lengths(target)
            result = _original(target, *args, **kwargs)
            if before is None or _history_lengths(target) != before:  # (Ctrl+Z with nothing to undo changes nothing)
                callback(SimpleNamespace(source=target))
            return result

        setattr(layer, name, replay)
        installed.append((name, replay))
    return installed  # (name, wrapper): see _stop_recording


def _history_lengths(layer: Any) -> tuple[int, int] | None:
    """The lengths of a Labels layer's undo and redo histories (napari's own; None where it keeps none)."""
    undo, redo = getattr(layer, "_undo_history", None), getattr(layer, "_redo_history", None)
    try:
        return len(undo), len(redo)
    except TypeError:
        return None


def with_frame_labels(table: Any, frame_ids: dict[int, tuple[int | None, int]] | None) -> Any:
    """``table`` (with a ``label`` column of stack-wide ids, and ``t``) with ``frame_label`` next to it, from
    :func:`frame_label_map`: 0 for an id the segmentation did not make, or one painted into another frame
    than its own (an id reused from another frame is not that frame's object); as it is without a map."""
    if frame_ids is None:
        return table
    if not len(table):  # every object erased: the column all the same (scripts join on it)
        if "frame_label" not in table.columns and "label" in table.columns:
            import pandas as pd

            table = table.copy()
            table.insert(int(table.columns.get_loc("label")) + 1, "frame_label", pd.Series(dtype=np.int64))
        return table
    table = table.drop(columns="frame_label", errors="ignore")
    frames = table["t"].to_numpy() if "t" in table.columns else [None] * len(table)
    own = [frame_ids.get(int(label), (None, 0)) for label in table["label"].to_numpy()]
    values = [ids if t_own is None or t is None or int(t) == t_own else 0 for (t_own, ids), t in zip(own, frames)]
    table.insert(int(table.columns.get_loc("label")) + 1, "frame_label", np.asarray(values, np.int64))
    return table


def free_names(folder: Path, names: Sequence[str]) -> list[Path]:
    """Paths in ``folder`` for files written together (one export): ``names`` as they are if none is
    taken, else all with the first number ``_2``, ``_3`` ... that none of them has yet, so the files of
    one export share their number (``tracks_3.csv`` with ``counts_3.csv``) whatever else the folder holds."""
    paths = [folder / name for name in names]
    i = 1
    while any(p.exists() for p in paths):
        i += 1
        paths = [folder / f"{Path(name).stem}_{i}{Path(name).suffix}" for name in names]
    return paths


def name_taken(path: Path, sidecars: Sequence[str] = ()) -> bool:
    """Whether a result must not be written at ``path``: the file exists, a run in progress will write it
    (:func:`being_written`), or a file named it plus one of ``sidecars`` exists (a trainer's ``.last.pt``)."""
    return (path.exists() or being_written(path)
            or any(path.with_name(path.name + sidecar).exists() for sidecar in sidecars))


def free_name(path: Path, sidecars: Sequence[str] = ()) -> Path:
    """``path`` if unused, else ``stem_2.suffix``, ``stem_3.suffix``, ... (results never overwrite).
    A name that is itself such a numbered copy (``model_2.pt`` next to ``model.pt``) goes on with
    the numbers (``model_3.pt``), not ``model_2_2.pt``. A name counts as used when a file named it plus
    one of ``sidecars`` exists, too (a trainer's ``.last.pt`` checkpoint, written beside its model), and
    when a run in progress will write it (:func:`being_written`)."""
    if not name_taken(path, sidecars):
        return path
    stem = path.stem
    numbered = re.fullmatch(r"(.+)_(\d+)", stem)
    if numbered and path.with_name(numbered.group(1) + path.suffix).exists():
        stem = numbered.group(1)
    i = 2
    while name_taken(candidate := path.with_name(f"{stem}_{i}{path.suffix}"), sidecars):
        i += 1
    return candidate


def placement_mismatch(image_layer: Any, labels_layer: Any) -> str | None:
    """How ``labels_layer`` lies elsewhere in the viewer than ``image_layer`` (their Y and X ``scale`` or
    ``translate`` differ: a mask opened from a plain TIFF over a calibrated image), or None. Training pairs
    pixels by index, so what it learns is then not what the user saw painted over the image."""
    import numpy as np

    differences = []
    for what in ("scale", "translate"):
        a = np.asarray(getattr(image_layer, what, ()), float)[-2:]
        b = np.asarray(getattr(labels_layer, what, ()), float)[-2:]
        if a.shape == b.shape == (2,) and not np.allclose(a, b, rtol=1e-6, atol=1e-9):
            differences.append(f"{what} {tuple(float(v) for v in b)} vs {tuple(float(v) for v in a)}")
    if not differences:
        return None
    return (f"'{labels_layer.name}' lies elsewhere in the viewer than '{image_layer.name}' ({'; '.join(differences)}): "
            "pixels are paired by index, not by where they are shown; give both layers the same scale and "
            "translate if the painting was done over the image")


def full_resolution(layer: Any) -> Any:
    """A layer's data at full resolution: the first level of a multiscale (pyramid) layer, whose
    ``data`` indexes levels, not frames; the data itself otherwise.

    numpy and dask arrays are returned as they are; any other array (a Zarr array, whose indexing
    reads at once) is wrapped in dask, so that taking a frame of it reads nothing until a worker
    asks for its values."""
    import numpy as np

    data = layer.data[0] if getattr(layer, "multiscale", False) else layer.data
    if isinstance(data, np.ndarray) or hasattr(data, "compute"):
        return data
    import dask.array as da

    chunks = getattr(data, "chunks", None)  # a Zarr array's own chunks; dask picks them otherwise
    chunks = chunks if isinstance(chunks, tuple) and all(isinstance(c, int) for c in chunks) else "auto"
    return da.from_array(data, chunks=chunks)  # (da.asarray would read an unknown array type at once)


def grey_image(layer: Any) -> Any:
    """An image layer's data for the networks, at full resolution (:func:`full_resolution`): RGB(A)
    layers (napari's ``rgb``) become grey, the mean of the colour channels ((Y, X, 3|4) -> (Y, X));
    others are returned as they are (numpy, or dask for lazy layers). A lazy RGB layer stays lazy:
    its grey is computed where it is read (in a worker), and so is an in-memory one's: a dask view
    of it, frame by frame (the mean of a 100-frame 1024 x 1024 RGB stack took 4 s of the GUI thread)."""
    import numpy as np

    data = full_resolution(layer)
    if getattr(layer, "rgb", False):
        if isinstance(data, np.ndarray):
            import dask.array as da

            data = da.from_array(data, chunks=(1,) * (data.ndim - 3) + tuple(data.shape[-3:]))
        return data[..., :3].mean(axis=-1, dtype=np.float32)  # computed when read
    return data


def labels_digest(labels: Any) -> str:
    """A fingerprint of a label array's values, shape and dtype (BLAKE2b, ~1 GB/s): the Segmentation
    dock's Export and the Auto-label preview compare a layer's with the one it had when the dock wrote
    it, to see corrections that emitted no paint event (a script writing into ``.data``)."""
    import hashlib

    arr = np.ascontiguousarray(np.asarray(labels))
    digest = hashlib.blake2b(arr.view(np.uint8).ravel(), digest_size=16)
    digest.update(f"{arr.shape}{arr.dtype}".encode())
    return digest.hexdigest()


@contextlib.contextmanager
def filling(table: Any) -> Any:
    """Fill a ``QTableWidget`` inside this block: no repaint, no selection signals and no column
    re-measuring per cell while it fills (with ``ResizeToContents`` columns every ``setItem``
    measured all rows again: 256 QC tiles took 5.6 s of the GUI thread); columns are sized once after."""
    from qtpy.QtWidgets import QHeaderView

    header = table.horizontalHeader()
    modes = [header.sectionResizeMode(i) for i in range(table.columnCount())]
    updates, sorting = table.updatesEnabled(), table.isSortingEnabled()
    table.setUpdatesEnabled(False)
    table.setSortingEnabled(False)  # rows would move while they are filled
    blocked = table.blockSignals(True)
    for i in range(len(modes)):
        header.setSectionResizeMode(i, QHeaderView.Interactive)
    try:
        yield table
    finally:
        for i, mode in enumerate(modes):
            header.setSectionResizeMode(i, mode)  # ResizeToContents again: one measuring pass
        table.blockSignals(blocked)
        table.setSortingEnabled(sorting)
        table.setUpdatesEnabled(updates)


#: in-memory arrays up to this size (bytes) are copied on the GUI thread when a run starts (~0.03 s);
#: larger ones are copied in the worker
GUI_COPY_BYTES = 64 * 2**20


def snapshot(data: Any) -> tuple[Any, bool]:
    """``(data, copied)``: a copy of a small in-memory array taken now, on the GUI thread, so painting
    during a run does not change what the run reads; a large (or lazy) one as it is, for the worker to
    copy or read (:func:`worker_copy`): a stroke painted while it copies may be taken in part, but the
    window does not stall for seconds. (napari's ``editable`` cannot guard it: switching it off drops
    the layer's undo history and its paint tool.)"""
    if isinstance(data, np.ndarray) and data.nbytes <= GUI_COPY_BYTES:
        return data.copy(), True
    return data, False


def worker_copy(data: Any, copied: bool) -> np.ndarray:
    """In the worker: the array of a :func:`snapshot` in memory, copied unless it was copied already."""
    return np.asarray(data) if copied else np.array(data)


def layer_geometry(layer: Any, ndim: int) -> dict:
    """``scale``, ``translate`` and ``units`` of ``layer``'s last ``ndim`` axes, for a result layer of
    ``ndim`` dimensions that must lie on top of it (a (Y, X) result of one frame of a (T, Y, X)
    layer takes the Y and X entries); empty when the layer has fewer axes."""
    scale = tuple(float(s) for s in getattr(layer, "scale", ()))
    if ndim < 1 or len(scale) < ndim:
        return {}
    geometry = {"scale": scale[-ndim:], "translate": tuple(float(v) for v in layer.translate)[-ndim:]}
    units = getattr(layer, "units", None)
    if units is not None and len(units) >= ndim:
        geometry["units"] = tuple(str(unit) for unit in units)[-ndim:]
    # its axes' names (a Z stack's "z", as the reader names it): the result saves as ZYX, not as a time-lapse;
    # napari's own defaults ("-3", "-2", "-1") say nothing and are left to the new layer
    names = tuple(str(name) for name in (getattr(layer, "axis_labels", None) or ()))
    if len(names) >= ndim and not all(name.lstrip("-").isdigit() for name in names[-ndim:]):
        geometry["axis_labels"] = names[-ndim:]
    # a rotated, sheared or affine-placed image: the result turns with it (the rotation of the last ndim
    # axes when it leaves the others alone; shear and affine with all of the layer's axes only)
    rotate = np.asarray(getattr(layer, "rotate", np.eye(len(scale))), float)
    lead = len(scale) - ndim
    if rotate.shape == (len(scale), len(scale)) and not np.allclose(rotate, np.eye(len(scale))) \
            and np.allclose(rotate[:lead, :lead], np.eye(lead)) and not rotate[:lead, lead:].any() \
            and not rotate[lead:, :lead].any():
        geometry["rotate"] = rotate[lead:, lead:]
    if lead == 0:
        shear = np.asarray(getattr(layer, "shear", ()), float)
        if shear.size and shear.any():
            geometry["shear"] = shear
        affine = getattr(getattr(layer, "affine", None), "affine_matrix", None)
        if affine is not None and not np.allclose(affine, np.eye(len(affine))):
            geometry["affine"] = np.asarray(affine, float)
    return geometry


def current_frame(viewer: Any, layer: Any) -> int:
    """The frame (index along the first data axis) of a stack ``layer`` that the viewer shows.

    Read from the viewer's world position, not from its slider step: the step counts in the
    finest step of all layers, so with a time-lapse scaled to minutes beside an unscaled layer
    step 10 is not frame 10."""
    import numpy as np

    position = layer.world_to_data(viewer.dims.point)
    n_frames = int(layer.data.shape[0])
    return int(min(max(int(np.floor(float(position[0]) + 0.5)), 0), n_frames - 1))


def show_frame(viewer: Any, layer: Any, t: int) -> None:
    """Move the viewer to frame ``t`` of a stack ``layer`` (in world units: its scale and offset)."""
    world = layer.data_to_world((float(t),) + (0.0,) * (layer.ndim - 1))
    viewer.dims.set_point(viewer.dims.ndim - layer.ndim, float(world[0]))


def layer_names(viewer: Any, kind: str) -> list[str]:
    """Names of the viewer's layers of a kind ("Image", "Labels", "Tracks", ...)."""
    return [layer.name for layer in viewer.layers if type(layer).__name__ == kind]


def unique_layer_name(viewer: Any, base: str) -> str:
    """A layer name not yet used in the viewer (results never replace user layers)."""
    names = {layer.name for layer in viewer.layers}
    if base not in names:
        return base
    i = 2
    while f"{base} [{i}]" in names:
        i += 1
    return f"{base} [{i}]"


def class_colormap(n_classes: int) -> Any:
    """A napari label colormap with the fixed colours of :func:`~napari_microseg.colours.class_colour`
    per class id (background transparent). Cyclic, not direct: napari maps a direct colormap through
    numba code it compiles on first use, which froze the window for 1-3 s when a class map was added."""
    from napari.utils.colormaps import CyclicLabelColormap
    from napari.utils.colormaps.standardize_color import transform_color

    colours = [class_colour(i) for i in range(1, max(2, min(int(n_classes), len(CLASS_COLOURS))))]
    return CyclicLabelColormap(colors=np.vstack([[0.0, 0.0, 0.0, 0.0], transform_color(colours)]))


def reset_choices_in_order(combo: Any) -> None:
    """``combo.reset_choices()`` (a magicgui ComboBox with callable choices), keeping the order the
    callable gives: magicgui appends new choices after the old ones, so a list meant newest first
    would end with the newest. The chosen value stays when it is still offered; ``changed`` is
    emitted only when the value changes."""
    before = combo.value
    with combo.changed.blocked():
        combo.native.clear()
        combo.reset_choices()
        if before in combo.choices:
            combo.value = before
    if combo.value != before:
        combo.changed.emit(combo.value)


def span_row(*widgets: Any) -> None:
    """Let magicgui Labels of a labelled Container (section headers, result lines) use their whole
    row: the empty name column beside them is hidden and they may grow (magicgui makes labels
    fixed-size), so their text no longer wraps in a narrow column. Call after the Container is built."""
    from qtpy.QtWidgets import QSizePolicy

    for widget in widgets:
        row = widget._labeled_widget() if hasattr(widget, "_labeled_widget") else None
        if row is not None:
            row._label_widget.hide()
        widget.native.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Preferred)


def section_header(text: str) -> Any:
    """A bold magicgui Label that heads a group of controls (use :func:`span_row` on it)."""
    from magicgui.widgets import Label

    return Label(value=f"<b>{text}</b>")


def result_line(value: str = "") -> Any:
    """A magicgui Label for a result (counts, summaries) that is shown, with its row, only while it
    has text: no empty row before the first result. Use :func:`span_row` on it."""
    from magicgui.widgets import Label

    class ResultLine(Label):
        @property
        def value(self) -> str:
            return Label.value.fget(self)

        @value.setter
        def value(self, text: str) -> None:
            Label.value.fset(self, text)
            if self.native.parent() is not None:  # shown without a parent, it would be a window of its own
                self.visible = bool(text)

    line = ResultLine(value=value)
    if not value:
        line.hide()
    return line


def unique_stack_ids(labels: np.ndarray, objects: Any) -> tuple[np.ndarray, Any]:
    """Labels (T, Y, X), ids >= 0 numbered per frame, made unique across the stack (frame t's shifted
    by the largest ids of the frames before it), and the objects table (``t``, ``label`` per frame)
    with ``label`` the new id and ``frame_label`` the frame's own id: each object of the stack gets
    its own features row and colour in a Labels layer. Run it in a worker for big stacks."""
    if np.asarray(labels).dtype.kind not in "ub" and np.min(labels, initial=0) < 0:
        raise ValueError("unique_stack_ids: labels hold negative values (not annotated): make them 0 first")
    tops = np.array([int(frame.max(initial=0)) for frame in labels], np.int64)
    offsets = np.concatenate([[0], np.cumsum(tops)[:-1]])
    labels = np.array(labels, dtype=display_labels(np.array([tops.sum()])).dtype, copy=True)
    for t in range(1, labels.shape[0]):
        if offsets[t]:
            frame = labels[t]
            np.add(frame, frame.dtype.type(offsets[t]), out=frame, where=frame > 0)
    table = objects.copy()
    table.insert(int(table.columns.get_loc("label")) + 1, "frame_label", table["label"])  # next to label: in the status bar
    table["label"] = table["label"].to_numpy() + offsets[table["t"].to_numpy().astype(int)]
    return labels, table.reset_index(drop=True)


def display_labels(labels: np.ndarray, smallest: Any = np.uint16) -> np.ndarray:
    """``labels`` ((Y, X) or (T, Y, X), ids >= 0) in the smallest unsigned dtype, from ``smallest`` up,
    that holds their largest id (uint32 beyond 65535). napari draws uint8/uint16 labels by a table
    lookup, but compiles numba code for wider ones on first use (a 1-3 s freeze). Copies only when
    the dtype changes; run it in a worker for big stacks. Arrays with negative values ("not
    annotated") or of other than integers are returned as they are."""
    labels = np.asarray(labels)
    if labels.size == 0 or labels.dtype.kind not in "iub" or (labels.dtype.kind == "i" and labels.min() < 0):
        return labels  # negative values ("not annotated") or not integers: as they are
    top = int(labels.max(initial=0))
    for dtype in (np.uint8, np.uint16, np.uint32):
        if np.dtype(dtype).itemsize >= np.dtype(smallest).itemsize and top <= np.iinfo(dtype).max:
            return labels if labels.dtype == dtype else labels.astype(dtype)
    return labels


def contrast_per_image(layers: list[tuple]) -> list[tuple]:
    """Layer data tuples ``(data, kwargs, kind)`` with napari's per-slice auto-contrast (the contrast limits
    follow the image shown) on the simulated layers that span decades of intensity
    (``simulate.samples.CONTRAST_PER_IMAGE_LAYERS``), in the napari versions that have it."""
    import inspect

    from napari.layers import Image

    from ..simulate.samples import CONTRAST_PER_IMAGE_LAYERS

    if "auto_contrast" not in inspect.signature(Image.__init__).parameters:
        return layers
    return [(data, {**kwargs, "auto_contrast": True} if kwargs.get("name") in CONTRAST_PER_IMAGE_LAYERS else kwargs, kind)
            for data, kwargs, kind in layers]
