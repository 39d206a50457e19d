"""Figures of a study (``segshap cohort report``): removal curves over cases, one panel per unit type.

Inputs are plain arrays already summarised over cases (``report.statistics``); PNG bytes out, rendered on an
Agg canvas like ``report.figures``.
"""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from SegSHAPLib.report.figures import CURVES, _png


def study_curves_figure(panels: dict[tuple[str, str], dict], units: list[str], values: list[str]) -> bytes:
    """A grid of panels, one row per value function and one column per unit type: the median (line) and
    interquartile range (band) over cases of the normalised MoRF, LeRF and random-order curves against the
    fraction of units removed.

    panels: (units, value) -> {"grid": (G,) fractions, "n": cases, "morf" | "lerf" | "random": (median, q25,
    q75), each (G,)}; a missing key leaves its panel empty with a note.
    """
    fig = Figure(figsize=(3.3 * len(units) + 0.6, 2.7 * len(values) + 0.9))
    axes = fig.subplots(len(values), len(units), squeeze=False, sharex=True, sharey=True)
    for row, value in enumerate(values):
        for column, unit_type in enumerate(units):
            ax = axes[row][column]
            panel = panels.get((unit_type, value))
            ax.set_title(f"{unit_type} units, {value} value" + (f" (n = {panel['n']})" if panel else ""),
                         fontsize=9)
            ax.grid(alpha=0.3)
            ax.tick_params(labelsize=8)
            ax.spines[["top", "right"]].set_visible(False)
            if panel is None:
                ax.text(0.5, 0.5, "no evaluated case", ha="center", va="center", transform=ax.transAxes,
                        fontsize=8, color="0.4")
                continue
            grid = np.asarray(panel["grid"], dtype=float)
            for key, label, colour, style in CURVES:
                median, q25, q75 = panel[key]
                ax.fill_between(grid, q25, q75, color=colour, alpha=0.18, lw=0)
                ax.plot(grid, median, style, color=colour, lw=1.6, label=label)
            if row == len(values) - 1:
                ax.set_xlabel("fraction of units removed", fontsize=9)
            if column == 0:
                ax.set_ylabel("normalised score s\u0303", fontsize=9)
    handles, labels = axes[-1][0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.06 if len(values) > 1 else 0.1, 1, 1))
    return _png(fig)
