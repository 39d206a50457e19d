"""A running explanation's current answer in the scene: its attribution map over the CT and its ranked units
table, repainted from each live estimate while the run goes on (Qt-free, so CI tests it on a slicer-core scene).

    live = LiveView(scene, ct_node, out_folder, value="softdice")
    ... for each progress event with an estimate:  live.offer(event.estimate)   # repaints at most every 3 s
    live.remove()                                   # when the run ends (its final nodes replace these)

The estimate is ``ProgressEvent.estimate`` (in process, or read back from ``--progress json`` by
``process_job``): ``{"coalitions", "total", "units", "values": {name: {"phi0", "phi", "std_error", "converged",
"coalitions_needed_forecast"}}}``. The unit map is the run's ``units.nii.gz``, which ``run_explain`` writes as
soon as the units are built; until it is there only the table is filled. The table marks each unit whose sign is
not yet settled (its 95% interval still reaches 0) and, while the run has not converged, ranks by the |phi| lower
bound, as the final table does (``tables.rank_units``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from SegSHAPLib.errors import InputError
from SegSHAPLib.explain.folder import ExplanationFolder

from . import display, tables
from .display import ROLE

LIVE_REFRESH_S = 3.0            # the most often the overlay and the table are repainted
LIVE_ROLE_PREFIX = "live_"      # SegSHAP.Role of the live nodes: live_attribution, live_units_table


class LiveView:
    """The live nodes of one run. scene: the MRML scene; ct_node: the CT the run explains (the overlay is put on
    its voxel grid); out: the run's output folder; value: the value function shown (default: the estimate's first);
    refresh_s: the least time between two repaints; clock: seconds (monotonic; tests pass their own)."""

    def __init__(self, scene, ct_node, out, value: str | None = None, refresh_s: float = LIVE_REFRESH_S,
                 clock: Callable[[], float] = time.monotonic):
        self.scene, self.ct_node, self.out = scene, ct_node, Path(out)
        self.value = value
        self.refresh_s = float(refresh_s)
        self.clock = clock
        self.nodes: dict = {}
        self.latest: dict | None = None
        self.painted_at: float | None = None
        self.paints = 0
        self._labels: np.ndarray | None = None       # int (z, y, x) unit ids of units.nii.gz, once it is there
        self._voxels: np.ndarray | None = None
        self._voxel_volume = 1.0
        self._units_volume = None                    # the unit map's Volume (its grid for the overlay)
        self.overlay_refused = False                 # the unit map is not on the CT's grid: no overlay

    # ------------------------------------------------------------------------------------------ caller's API
    def offer(self, estimate: dict | None) -> bool:
        """Keep ``estimate`` as the latest; repaint when ``refresh_s`` has passed since the last repaint. True
        when it repainted."""
        if estimate is not None:
            self.latest = estimate
        if self.latest is None or (self.painted_at is not None and self.clock() - self.painted_at < self.refresh_s):
            return False
        self.paint()
        return True

    def paint(self) -> None:
        """Repaint the overlay and the table from the latest estimate now."""
        if self.latest is None:
            return
        values = self.latest["values"]
        name = self.value if self.value in values else next(iter(values))
        answer = values[name]
        phi = np.asarray(answer["phi"], dtype=float)
        self._load_units(len(phi))
        names = list(self.latest.get("units") or [str(j + 1) for j in range(len(phi))])
        voxels = self._voxels if self._voxels is not None else np.zeros(len(phi), dtype=np.int64)
        by = "phi" if answer.get("converged") else "lower_bound"
        if "units_table" not in self.nodes:
            self.nodes["units_table"] = tables.units_table(self.scene, names, phi, voxels, self._voxel_volume,
                                                           "SegSHAP live units", std_error=answer["std_error"],
                                                           by=by)
            self.nodes["units_table"].SetAttribute(ROLE, LIVE_ROLE_PREFIX + "units_table")
        else:
            tables.fill_units_table(self.nodes["units_table"], names, phi, voxels, self._voxel_volume,
                                    std_error=answer["std_error"], by=by)
        self.nodes["units_table"].SetAttribute("SegSHAP.Value", name)
        self.nodes["units_table"].SetAttribute("SegSHAP.Coalitions", f"{self.latest['coalitions']}/{self.latest['total']}")
        if self._labels is not None:
            self._paint_attribution(phi)
        self.painted_at = self.clock()
        self.paints += 1

    def remove(self) -> None:
        """Take the live nodes out of the scene (the run's final nodes replace them)."""
        for node in self.nodes.values():
            if node.GetScene() is not None:
                self.scene.RemoveNode(node)
        self.nodes = {}

    # ------------------------------------------------------------------------------------------- internals
    def _load_units(self, count: int) -> None:
        """Read the run's unit map once it exists and matches the estimate's unit count."""
        if self._labels is not None or self.overlay_refused:
            return
        path = ExplanationFolder(self.out).image_path("units")
        if not path.is_file():
            return
        from SegSHAPLib.io.image_io import read_volume

        units = read_volume(path)
        labels = np.asarray(units.array).astype(np.int64)
        if labels.max(initial=0) != count:
            return                                   # another run's map, or not yet rewritten: try again later
        self._labels = labels
        self._voxels = np.bincount(labels.ravel(), minlength=count + 1)[1:count + 1]
        self._voxel_volume = float(np.prod(units.spacing))
        self._units_volume = units

    def _paint_attribution(self, phi: np.ndarray) -> None:
        """phi of each voxel's unit (float32 (z, y, x), 0 outside the units) into the live attribution node."""
        from .results import on_ct_grid
        from .volumes import image_data_from_array, node_ijk_to_ras

        lookup = np.concatenate([[0.0], phi]).astype(np.float32)
        volume = self._units_volume.with_array(lookup[self._labels])
        max_abs = float(np.max(np.abs(phi))) if phi.size else 0.0
        node = self.nodes.get("attribution")
        if node is None:
            try:
                node = on_ct_grid(self.scene, volume, self.ct_node, node_ijk_to_ras(self.ct_node, world=False),
                                  "SegSHAP live attribution", labelmap=False)
            except InputError:
                self._labels = None                  # not this CT's grid: the table alone, never a wrong overlay
                self.overlay_refused = True
                return
            node.SetAttribute(ROLE, LIVE_ROLE_PREFIX + "attribution")
            self.nodes["attribution"] = node
            display.show_attribution(self.scene, node, max_abs=max_abs, background_node=self.ct_node)
            display.set_slice_layers(self.scene, background_node=self.ct_node, foreground_node=node)
        else:                                         # new voxels, same grid; the window follows max |phi|
            node.SetAndObserveImageData(image_data_from_array(volume.array))
            node.GetDisplayNode().SetWindowLevel(*display.symmetric_window(max_abs))


__all__ = ["LiveView", "LIVE_REFRESH_S", "LIVE_ROLE_PREFIX"]
