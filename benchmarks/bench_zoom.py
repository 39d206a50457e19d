"""Benchmark: the zoom's control variate on the demo's false positive, against the plain estimate of the same game.

1. ``segshap demo --zoom-budget B``: the organ explanation (``systems`` grouping, 9 units, exact with 512
   coalitions) and its zoom into the 100 mm cells of the top organ, with the exact organ game as control variate
   (its 62 cell patterns, then a plan of B - 62 coalitions). An existing --out folder is resumed.
2. Plans are nested, so the zoom's journal holds the plan of every smaller budget. Each prefix budget is solved
   twice on the very same coalitions: with the control (what ``segshap explain --refine`` does) and without it
   (the plain KernelSHAP estimate of the zoom game). Per budget: the largest standard error relative to
   |v(full) - v(empty)|, the cross-validated held-out R^2, the verdict (converged = every standard error within
   1% of the effect and held-out R^2 >= 0.9, ``report.verdict``) and phi of the units.

From the repo root (about 2,900 coalitions' worth of patch forwards with the default budget: a few minutes idle):

    nice -n 10 .venv/bin/python benchmarks/bench_zoom.py [--out bench_zoom_out] [--budget 1086]

Prints the table and writes ``OUT/bench_zoom.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "SegSHAP"))

from SegSHAPLib.cli import demo  # noqa: E402
from SegSHAPLib.cli.main import main as segshap  # noqa: E402
from SegSHAPLib.explain.journal import journal_entries  # noqa: E402
from SegSHAPLib.io.image_io import read_volume  # noqa: E402
from SegSHAPLib.report.verdict import HELDOUT_R2_GOAL  # noqa: E402
from SegSHAPLib.shapley.control import refined_parent_game, within_unit_coalitions  # noqa: E402
from SegSHAPLib.shapley.kernelshap import coalition_plan, kernel_shap_many  # noqa: E402
from SegSHAPLib.shapley.store import coalition_keys  # noqa: E402

PREFIXES = (128, 192, 256, 320, 384, 448, 514, 640, 768, 1024)   # sampled plan sizes (the budget minus 62)
VALUE = "softdice"


def _folders(out: Path) -> tuple[Path, Path]:
    parent = out / f"false_positive__organs_{demo.DEMO_GROUPING}__{VALUE}"
    zoom = out / f"false_positive__zoom_{demo.DEMO_ZOOM_FCC_SCALE_MM:g}mm__{VALUE}"
    return parent, zoom


def _parent_of(parent: Path, zoom: Path) -> np.ndarray:
    """int (M,) the parent unit (0-based) of each zoom unit, from the two unit maps (z, y, x)."""
    parent_labels = read_volume(parent / "units.nii.gz").array.astype(np.int64)
    zoom_labels = read_volume(zoom / "units.nii.gz").array.astype(np.int64)
    return np.array([np.bincount(parent_labels[zoom_labels == c]).argmax() - 1
                     for c in range(1, int(zoom_labels.max()) + 1)])


def _table(folder: Path, n_units: int) -> np.ndarray:
    """(2^n,) the folder's journaled VALUE by bitmask of its units (an exactly enumerated game)."""
    entries = journal_entries(folder)
    keys = [key for key in entries if VALUE in entries[key]]
    bits = np.unpackbits(np.frombuffer(bytes.fromhex("".join(keys)), dtype=np.uint8).reshape(len(keys), -1),
                         axis=1)[:, :n_units].astype(np.int64)
    table = np.full(1 << n_units, np.nan)
    table[bits @ (1 << np.arange(n_units))] = [entries[key][VALUE] for key in keys]
    if np.isnan(table).any():
        raise SystemExit(f"{folder} does not hold every coalition of its {n_units} units")
    return table


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench_zoom_out"))
    parser.add_argument("--budget", type=int, default=max(PREFIXES) + 62)
    args = parser.parse_args(argv)
    if segshap(["demo", "--out", str(args.out), "--zoom-budget", str(args.budget)]) != 0:
        return 1
    parent, zoom = _folders(args.out)
    parent_summary = json.loads((parent / "summary.json").read_text())
    zoom_summary = json.loads((zoom / "summary.json").read_text())
    parent_of = _parent_of(parent, zoom)
    refined = tuple(int(r) for r in np.flatnonzero(np.bincount(parent_of) > 1))
    entries = journal_entries(zoom)

    def game(keep: np.ndarray) -> np.ndarray:
        return np.array([[entries[key.hex()][VALUE]] for key in coalition_keys(keep)])

    measured = game(within_unit_coalitions(parent_of, refined))[:, 0]
    control = refined_parent_game(_table(parent, len(parent_summary["units"])), parent_of, refined, measured)
    names = [u["name"] for u in zoom_summary["units"]]
    n_units, seed = len(names), int(zoom_summary["solver"]["seed"])
    delta = abs(zoom_summary["full_value"] - zoom_summary["base_value"])
    rows = []
    print(f"zoom: {n_units} units, {len(measured) - 2 * len(refined)} cell patterns measured; "
          f"|v(full) - v(empty)| = {delta:.4f}")
    print(f"{'sampled':>8} {'':8} {'max SE/|d|':>10} {'held-out R2':>11} {'verdict':>13}  top units")
    for size in PREFIXES:
        plan = coalition_plan(n_units, size, seed)
        if not all(key.hex() in entries for key in coalition_keys(plan.masks)):
            break
        for label, controls in (("control", [control]), ("plain", None)):
            result, = kernel_shap_many(game, n_units, size, seed, controls=controls)
            info = result.diagnostics
            worst = max(info["phi_std_error"]) / delta
            converged = bool(info["converged"] and info["heldout_r2"] >= HELDOUT_R2_GOAL)
            top = np.argsort(-np.abs(result.phi))[:3]
            rows.append({"sampled": size, "estimate": label, "max_se_over_delta": worst,
                         "heldout_r2": info["heldout_r2"], "converged": converged,
                         "phi": dict(zip(names, map(float, result.phi)))})
            print(f"{size:8d} {label:8} {worst:10.4f} {info['heldout_r2']:11.3f} "
                  f"{'converged' if converged else 'not converged':>13}  "
                  + ", ".join(f"{names[j]} {result.phi[j]:+.3f}" for j in top))
    (args.out / "bench_zoom.json").write_text(json.dumps({"delta": delta, "units": names, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
