"""A live loss/metric plot for a dock widget, drawn with pyqtgraph.

pyqtgraph paints with Qt directly (a few milliseconds per update), where a
matplotlib redraw took 150-200 ms on the GUI thread on a 2-core machine and
made the window stutter during training.
"""

from __future__ import annotations

import pyqtgraph as pg

BG = "#262930"


#: every pyqtgraph plot the docks made, for the life of the process (a few KB each): its Python side must not be
#: collected while Qt still draws or measures its items. pyqtgraph's items sit in reference cycles; once a closed
#: dock's plot was collected before Qt had deleted its scene, Qt's next size query reached a LabelItem with its
#: attributes cleared ("'LabelItem' object has no attribute '_sizeHint'"). (Docks froze the collector for good
#: until session 27, which hid this and leaked every layer.)
_PLOTS_KEPT: list = []


def kept_alive(plot: pg.PlotWidget) -> pg.PlotWidget:
    """``plot``, kept referenced for the life of the process (see :data:`_PLOTS_KEPT`)."""
    _PLOTS_KEPT.append(plot)
    return plot


class LossPlot(pg.PlotWidget):
    """Train loss per step (thin line), validation loss per epoch (orange) and validation Dice (green, right axis 0-1)."""

    def __init__(self, metric_name: str = "val Dice", min_height: int = 200) -> None:
        """``min_height``: the least height in pixels the plot asks of its dock."""
        super().__init__(background=BG)
        kept_alive(self)
        self.setMinimumHeight(min_height)
        item = self.getPlotItem()
        item.setLabel("bottom", "epoch")
        item.setLabel("left", "loss")
        item.getAxis("left").enableAutoSIPrefix(False)  # a loss of 0.693 reads 0.693, not 693 "(x0.001)"
        item.showGrid(x=True, y=True, alpha=0.2)
        # the names on one row above the curves, in a title row kept empty for them: inside the view, wherever
        # it sat, the legend hid the newest points of a curve (mid-right: a falling loss's latest epochs)
        item.setTitle(" ", size="7pt")
        legend = item.addLegend(labelTextSize="7pt", colCount=3, verSpacing=-6)
        legend.setParentItem(item)
        legend.layout.setContentsMargins(0, 0, 0, 0)
        legend.anchor(itemPos=(0.5, 0), parentPos=(0.5, 0))
        self.train_curve = item.plot([], [], pen=pg.mkPen("#6fa8dc", width=1), name="train loss")
        self.val_curve = item.plot([], [], pen=pg.mkPen("#f6b26b", width=2), symbol="o", symbolSize=5,
                                   symbolBrush="#f6b26b", name="val loss")
        # Dice on a second view box sharing x, with its own 0..1 axis on the right
        self.dice_view = pg.ViewBox()
        item.showAxis("right")
        item.scene().addItem(self.dice_view)
        item.getAxis("right").linkToView(self.dice_view)
        item.getAxis("right").setLabel(metric_name)
        self.dice_view.setXLink(item)
        self.dice_view.setYRange(0, 1, padding=0)
        self.dice_curve = pg.PlotDataItem([], [], pen=pg.mkPen("#93c47d", width=2), symbol="s", symbolSize=5,
                                          symbolBrush="#93c47d", name=metric_name)
        self.dice_view.addItem(self.dice_curve)
        self.legend = legend
        legend.removeItem(self.val_curve)  # validation curves enter the legend with their first point:
        self.in_legend = {self.val_curve: False, self.dice_curve: False}  # a run without validation lists none
        self.metric_name = metric_name
        item.vb.sigResized.connect(self._sync_views)
        self.reset()

    def _sync_views(self) -> None:
        self.dice_view.setGeometry(self.getPlotItem().vb.sceneBoundingRect())

    def reset(self) -> None:
        self.steps: list[tuple[float, float]] = []
        self.epochs: list[tuple[int, float | None, float | None]] = []
        self.refresh()

    def add_step(self, x: float, loss: float) -> None:
        self.steps.append((x, loss))

    def add_epoch(self, epoch: int, val_loss: float | None, val_dice: float | None) -> None:
        self.epochs.append((epoch, val_loss, val_dice))

    def add_earlier_epochs(self, rows: list[dict]) -> None:
        """Draw the epochs of a run before it was resumed, from its history rows (``epoch``, ``train_loss``,
        ``val_loss``, ``val_dice``): each epoch's mean training loss at its middle (the steps were not kept)."""
        for row in rows:
            if row.get("train_loss") is not None:
                self.steps.append((row["epoch"] - 0.5, float(row["train_loss"])))
            self.epochs.append((int(row["epoch"]), row.get("val_loss"), row.get("val_dice")))

    def refresh(self) -> None:
        """Push the collected points into the curves (cheap; safe to call often)."""
        self.train_curve.setData([x for x, _ in self.steps], [y for _, y in self.steps])
        val = [(e, v) for e, v, _ in self.epochs if v is not None]
        self.val_curve.setData([e for e, _ in val], [v for _, v in val])
        dice = [(e, d) for e, _, d in self.epochs if d is not None]
        self.dice_curve.setData([e for e, _ in dice], [d for _, d in dice])
        for curve, name, points in ((self.val_curve, "val loss", val), (self.dice_curve, self.metric_name, dice)):
            if bool(points) != self.in_legend[curve]:
                if points:
                    self.legend.addItem(curve, name)
                else:
                    self.legend.removeItem(curve)
                self.in_legend[curve] = bool(points)
