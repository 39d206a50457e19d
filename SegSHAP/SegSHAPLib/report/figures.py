"""Figures for an explanation, rendered off-screen (Agg) and returned as PNG bytes.

Every figure is a ``matplotlib.figure.Figure`` drawn on its own Agg canvas: nothing touches pyplot's global
state, so the functions are safe in a server, a test run or Slicer's Python.

Axis conventions: image arrays are numpy arrays in (z, y, x) order on the CT's voxel grid (``Volume.array``).
For display they are reoriented to (S, A, R) order - numpy axis 0 runs inferior -> superior, axis 1 posterior ->
anterior, axis 2 patient's left -> right - using the ``Volume``'s direction matrix (nearest axis for oblique
scans), then shown in radiological convention: axial with the patient's right on the image left and anterior
up, coronal with superior up and the patient's right on the left, sagittal with superior up and anterior on
the left. Pixels keep their true aspect in mm.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import matplotlib
import numpy as np
from matplotlib import patheffects
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from SegSHAPLib.io.image_io import LPS_TO_RAS, Volume

OVERLAY_CMAP = "RdBu_r"
OVERLAY_ALPHA = 0.6
CT_WINDOW_HU = (-160.0, 240.0)
PREDICTION_COLOUR = "#ffd000"
ROI_COLOUR = "#00e05a"
POSITIVE_COLOUR = matplotlib.colormaps[OVERLAY_CMAP](0.85)
NEGATIVE_COLOUR = matplotlib.colormaps[OVERLAY_CMAP](0.15)
COLOURBAR_LABEL = "Shapley value (red: supports the value, blue: opposes)"
DPI = 110


# --------------------------------------------------------------------------------------------- helpers
def _png(fig: Figure, dpi: int = DPI) -> bytes:
    """Render a Figure on an Agg canvas and return the PNG bytes."""
    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, facecolor="white")
    return buffer.getvalue()


def rank_units(units: list[dict]) -> list[dict]:
    """Units (summary.json's dicts with "name", "shap", ...) sorted by |phi|, largest first (stable)."""
    return sorted(units, key=lambda unit: -abs(float(unit["shap"])))


def symmetric_limit(attribution: np.ndarray) -> float:
    """max |phi| over an array of any shape (1.0 when all zero or empty): the colour range is [-limit, +limit]."""
    limit = float(np.max(np.abs(attribution))) if attribution.size else 0.0
    return limit if limit > 0 else 1.0


# ------------------------------------------------------------------------------------ reorientation
@dataclass(frozen=True)
class Reorientation:
    """How to take a (z, y, x) array on a Volume's grid to (S, A, R) order.

    axes:    numpy axes of the source array that become S, A, R (a permutation of 0, 1, 2).
    flips:   for each of S, A, R, whether that axis must be reversed to run in the positive direction.
    spacing: voxel size in mm along S, A, R.
    """

    axes: tuple[int, int, int]
    flips: tuple[bool, bool, bool]
    spacing: tuple[float, float, float]

    @classmethod
    def of(cls, volume: Volume) -> "Reorientation":
        """From the direction matrix (columns = LPS directions of i, j, k; numpy axis a is index axis 2 - a)."""
        ras_directions = LPS_TO_RAS @ volume.direction          # column c = RAS direction of index axis c
        dominant = np.argmax(np.abs(ras_directions), axis=0)    # RAS axis (0=R, 1=A, 2=S) of index axis c
        if sorted(dominant.tolist()) != [0, 1, 2]:
            raise ValueError("cannot display a volume whose index axes do not map to distinct patient axes")
        axes, flips, spacing = [], [], []
        for ras_axis in (2, 1, 0):                              # S, A, R
            index_axis = int(np.flatnonzero(dominant == ras_axis)[0])
            axes.append(2 - index_axis)
            flips.append(bool(ras_directions[ras_axis, index_axis] < 0))
            spacing.append(float(volume.spacing[index_axis]))
        return cls(tuple(axes), tuple(flips), tuple(spacing))

    def apply(self, array: np.ndarray) -> np.ndarray:
        """(z, y, x) array -> (S, A, R) array (a view, no copy)."""
        out = np.transpose(array, self.axes)
        return out[tuple(slice(None, None, -1) if f else slice(None) for f in self.flips)]


# ------------------------------------------------------------------------------------ slice panel
@dataclass(frozen=True)
class View:
    """One orthogonal view of (S, A, R) arrays: which axis is fixed and the side labels of the image."""

    name: str
    axis: int                                   # fixed axis of the (S, A, R) array
    sides: tuple[str, str, str, str]            # labels at image left, right, top, bottom


VIEWS = (View("axial", 0, ("R", "L", "A", "P")),
         View("coronal", 1, ("R", "L", "S", "I")),
         View("sagittal", 2, ("A", "P", "S", "I")))


def view_slice(array_sar: np.ndarray, view: View, index: int) -> np.ndarray:
    """2D image (rows top -> bottom, columns left -> right) of an (S, A, R) array at ``index`` along view.axis.

    The two remaining axes both run in the positive patient direction, so reversing both puts superior or
    anterior at the top and the patient's right (or anterior, for sagittal) on the image left.
    """
    return np.take(array_sar, index, axis=view.axis)[::-1, ::-1]


def view_spacing(spacing_sar: tuple[float, float, float], view: View) -> tuple[float, float]:
    """(row, column) pixel size in mm of ``view_slice``'s image."""
    rows, cols = (s for axis, s in enumerate(spacing_sar) if axis != view.axis)
    return rows, cols


def roi_centre(roi_sar: np.ndarray) -> tuple[int, int, int]:
    """(S, A, R) index of the ROI voxel nearest the ROI's centroid (so all three views cut the ROI)."""
    voxels = np.argwhere(roi_sar)
    if voxels.size == 0:
        return tuple(int(n) // 2 for n in roi_sar.shape)
    nearest = voxels[np.argmin(((voxels - voxels.mean(axis=0)) ** 2).sum(axis=1))]
    return tuple(int(v) for v in nearest)


def crop_box(mask_sar: np.ndarray, spacing_sar: tuple[float, float, float],
             margin_mm: float) -> tuple[slice, slice, slice]:
    """Bounding box of a (S, A, R) mask grown by margin_mm on every side, clipped to the array."""
    voxels = np.argwhere(mask_sar)
    if voxels.size == 0:
        return tuple(slice(None) for _ in range(3))
    box = []
    for axis, (n, s) in enumerate(zip(mask_sar.shape, spacing_sar)):
        pad = int(np.ceil(margin_mm / s))
        box.append(slice(max(0, voxels[:, axis].min() - pad), min(n, voxels[:, axis].max() + 1 + pad)))
    return tuple(box)


def _overlay_cmap():
    """The diverging map with masked (phi = 0) pixels fully transparent."""
    return matplotlib.colormaps[OVERLAY_CMAP].with_extremes(bad=(0.0, 0.0, 0.0, 0.0))


SIDE_LABEL_PLACES = ((0.01, 0.5, "left", "center"), (0.99, 0.5, "right", "center"),
                     (0.5, 0.99, "center", "top"), (0.5, 0.01, "center", "bottom"))


def _draw_view(ax, images: dict[str, np.ndarray], norm: Normalize, view: View, aspect: float):
    """CT in grey, attribution overlay (transparent where phi = 0), prediction and ROI contours, side labels.

    images: 2D arrays from ``view_slice`` keyed "ct", "attribution", "prediction", "roi"; aspect = row mm / column
    mm. Returns the overlay's AxesImage (for the colour bar).
    """
    ax.imshow(images["ct"], cmap="gray", vmin=CT_WINDOW_HU[0], vmax=CT_WINDOW_HU[1], aspect=aspect,
              interpolation="antialiased")
    overlay = ax.imshow(np.ma.masked_equal(images["attribution"], 0.0), cmap=_overlay_cmap(), norm=norm,
                        alpha=OVERLAY_ALPHA, aspect=aspect, interpolation="nearest")
    for key, colour, width in (("prediction", PREDICTION_COLOUR, 1.6), ("roi", ROI_COLOUR, 1.0)):
        if images[key].any() and not images[key].all():
            ax.contour(images[key].astype(float), levels=[0.5], colors=[colour], linewidths=width)
    ax.set_title(f"{view.name} through the ROI centre", fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    for (x, y, ha, va), label in zip(SIDE_LABEL_PLACES, view.sides):
        ax.text(x, y, label, transform=ax.transAxes, ha=ha, va=va, color="white", fontsize=8, fontweight="bold",
                path_effects=[patheffects.withStroke(linewidth=2, foreground="black")])
    return overlay


def _panel_arrays(ct: Volume, prediction: np.ndarray, roi: np.ndarray, attribution: np.ndarray, target: int,
                  margin_mm: float) -> tuple[dict[str, np.ndarray], tuple[float, float, float]]:
    """The four maps in (S, A, R) order cropped to the ROI and attributed voxels (+ margin), and the spacing."""
    orient = Reorientation.of(ct)
    arrays = {"ct": ct.array, "prediction": prediction == target, "roi": roi > 0, "attribution": attribution}
    sar = {key: orient.apply(a) for key, a in arrays.items()}
    box = crop_box(sar["roi"] | (sar["attribution"] != 0), orient.spacing, margin_mm)
    return {key: a[box] for key, a in sar.items()}, orient.spacing


def _add_legend(fig: Figure, bar_cell, legend_cell, overlay, target_label: str) -> None:
    """Horizontal colour bar of the overlay in bar_cell and the contour legend in legend_cell (SubplotSpecs)."""
    colourbar = fig.colorbar(overlay, cax=fig.add_subplot(bar_cell), orientation="horizontal")
    colourbar.solids.set_alpha(1.0)
    colourbar.set_label(COLOURBAR_LABEL, fontsize=9)
    colourbar.ax.tick_params(labelsize=8)
    legend_ax = fig.add_subplot(legend_cell)
    legend_ax.axis("off")
    legend_ax.legend(handles=[Line2D([], [], color=PREDICTION_COLOUR, lw=2, label=f"prediction: {target_label}"),
                              Line2D([], [], color=ROI_COLOUR, lw=2, label="ROI (explained component)")],
                     loc="center", fontsize=8, frameon=False)


def slice_panel(ct: Volume, prediction: np.ndarray, roi: np.ndarray, attribution: np.ndarray, target: int, *,
                target_name: str | None = None, margin_mm: float = 20.0, width_in: float = 12.0) -> bytes:
    """Axial, coronal and sagittal views through the ROI centre, as PNG bytes.

    ct:          the CT Volume (HU; its direction and spacing drive orientation and aspect).
    prediction:  label map (z, y, x) on the CT grid; its ``target`` class is outlined.
    roi:         ROI mask (z, y, x), outlined in a second colour.
    attribution: float (z, y, x), phi of each voxel's unit, 0 outside units; shown with a diverging colour
                 map centred on 0 over [-max|phi|, +max|phi|], transparent where phi = 0.
    The field of view is the box around the ROI and every attributed voxel, grown by margin_mm; all three views
    share one mm scale.
    """
    attribution = np.asarray(attribution, dtype=np.float32)
    sar, spacing = _panel_arrays(ct, prediction, roi, attribution, target, margin_mm)
    centre = roi_centre(sar["roi"])
    views = [{key: view_slice(a, view, centre[view.axis]) for key, a in sar.items()} for view in VIEWS]
    pixel_mm = [view_spacing(spacing, view) for view in VIEWS]
    widths = [images["ct"].shape[1] * cols for images, (rows, cols) in zip(views, pixel_mm)]
    heights = [images["ct"].shape[0] * rows for images, (rows, cols) in zip(views, pixel_mm)]
    image_in = width_in * 0.94 * max(heights) / sum(widths)
    total_in = image_in + 1.1
    fig = Figure(figsize=(width_in, total_in))
    grid = fig.add_gridspec(2, 3, width_ratios=widths, height_ratios=[image_in, 0.12], left=0.01, right=0.99,
                            top=1 - 0.3 / total_in, bottom=0.55 / total_in, wspace=0.03, hspace=0.12)
    limit = symmetric_limit(attribution)
    norm = Normalize(-limit, limit)
    for column, (view, images, (rows, cols)) in enumerate(zip(VIEWS, views, pixel_mm)):
        overlay = _draw_view(fig.add_subplot(grid[0, column]), images, norm, view, rows / cols)
    _add_legend(fig, grid[1, 0:2], grid[1, 2], overlay, target_name or f"label {target}")
    return _png(fig)


# ------------------------------------------------------------------------------------ bar chart
def ranked_bar_chart(units: list[dict], top: int = 15, ranked_ids: list[int] | None = None,
                     half_widths: dict[int, float] | None = None, ranked_by: str = "|Shapley value|") -> bytes:
    """Horizontal bars of the ``top`` units by |phi| (largest at the top), red positive, blue negative.

    units: summary.json's "units" list of {"id", "name", "shap", ...}; ranked_ids: unit ids in the order to show
    (e.g. by a lower confidence bound) instead of by |phi|, named in the title by ranked_by; half_widths: unit id -> half-width of an interval
    drawn around phi (e.g. z x standard error).
    """
    by_id = {unit.get("id"): unit for unit in units}
    shown = ([by_id[i] for i in ranked_ids] if ranked_ids is not None else rank_units(units))[:top]
    names = [unit["name"] for unit in shown][::-1]
    values = np.array([float(unit["shap"]) for unit in shown][::-1])
    fig = Figure(figsize=(6.0, 0.9 + 0.3 * max(len(shown), 1)))
    ax = fig.add_subplot()
    widths = None if half_widths is None else [half_widths.get(unit.get("id"), 0.0) for unit in shown][::-1]
    ax.barh(range(len(values)), values, color=[POSITIVE_COLOUR if v >= 0 else NEGATIVE_COLOUR for v in values],
            height=0.7, xerr=widths, error_kw={"ecolor": "0.25", "capsize": 2, "lw": 0.8})
    ax.set_yticks(range(len(values)), names, fontsize=8)
    ax.axvline(0.0, color="0.3", lw=0.8)
    span = symmetric_limit(values if widths is None else np.abs(values) + np.asarray(widths))
    ax.set_xlim(-(1.5 if (values < 0).any() else 0.05) * span, (1.5 if (values > 0).any() else 0.05) * span)
    for y, v in enumerate(values):
        ax.text(v, y, f" {v:+.3g} ", va="center", ha="left" if v >= 0 else "right", fontsize=7)
    ax.set_xlabel("Shapley value", fontsize=9)
    ax.tick_params(axis="x", labelsize=8)
    ax.set_title(f"top {len(shown)} of {len(units)} units by {ranked_by}"
                 + ("" if widths is None else "\n(lines: 95% intervals of \u03c6)"), fontsize=9)
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    return _png(fig)


# ------------------------------------------------------------------------------------ faithfulness
CURVES = (("morf", "MoRF (most relevant removed first)", POSITIVE_COLOUR, "-"),
          ("lerf", "LeRF (least relevant removed first)", NEGATIVE_COLOUR, "-"),
          ("random", "random order", "0.45", "--"))


def curves_figure(faithfulness: dict, title: str = "") -> bytes:
    """MoRF, LeRF and random-order score curves against the fraction of units removed, as PNG bytes.

    faithfulness: faithfulness.json's dict (fraction_removed, morf, lerf, random: K + 1 floats each; aopc, abpc,
    s_min). The title carries AOPC and ABPC after the optional ``title``.
    """
    fig = Figure(figsize=(6.0, 4.2))
    ax = fig.add_subplot()
    x = np.asarray(faithfulness["fraction_removed"], dtype=float)
    for key, label, colour, style in CURVES:
        if faithfulness.get(key) is not None:
            ax.plot(x, faithfulness[key], style, color=colour, lw=1.8, marker="o", ms=3, label=label)
    if faithfulness.get("s_min") is not None:
        ax.axhline(faithfulness["s_min"], color="0.6", lw=0.8, ls=":", label="all units removed")
    ax.set_xlabel("fraction of units removed (by rank)", fontsize=9)
    ax.set_ylabel("value function score", fontsize=9)
    ax.tick_params(labelsize=8)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, frameon=False, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2)
    metrics = f"AOPC {faithfulness['aopc']:.4g}   ABPC {faithfulness['abpc']:.4g}"
    ax.set_title(f"{title}\n{metrics}" if title else metrics, fontsize=9)
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    return _png(fig)
