"""Faithfulness of an explanation: MoRF / LeRF / random removal curves, AOPC, ABPC and their normalised forms.

Units are ranked by phi. After removing the first n_k = round(k M / K) units of a ranking (k = 0..K), the score
s(k) is recomputed with the explanation's own operator and value function (same engine, same ROI, same mask
value). With s_max = s(0) and s_min = v(all units removed):

    AOPC  = (1/K) sum_{k=1..K} (s(0) - s_MoRF(k))
    ABPC  = (1/K) sum_{k=1..K} (s_LeRF(k) - s_MoRF(k))
    s~(k) = (s(k) - s_min) / (s_max - s_min + eps), and nAOPC, nABPC are the same sums over s~.

The random curve (a seeded permutation) is the reference a useful ranking must beat. Coalition values already
in the explanation's journal are reused, and new ones are journaled too. An explanation of several value
functions gets the curves of each (ranked by its own phi, scored by its own value), all their coalitions
evaluated together, once each.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from SegSHAPLib.errors import InputError
from SegSHAPLib.io.image_io import read_volume

NORMALISATION_EPS = 1e-8


def removal_coalitions(order: np.ndarray, steps: int) -> np.ndarray:
    """bool (K+1, M): row k keeps every unit except the first round(k M / K) of ``order`` (0-based unit indices)."""
    m = len(order)
    keep = np.ones((steps + 1, m), dtype=bool)
    for k in range(steps + 1):
        keep[k, order[:int(round(k * m / steps))]] = False
    return keep


def curve_metrics(morf: np.ndarray, lerf: np.ndarray, s_min: float) -> dict:
    """AOPC, ABPC, nAOPC and nABPC from curves of length K+1 (k = 0 first) and the all-removed score."""
    k = len(morf) - 1
    s0 = float(morf[0])
    scale = s0 - s_min + NORMALISATION_EPS

    def normalised(curve):
        return (np.asarray(curve) - s_min) / scale

    return {"aopc": float(np.sum(s0 - morf[1:]) / k),
            "abpc": float(np.sum(lerf[1:] - morf[1:]) / k),
            "naopc": float(np.sum(normalised(morf)[0] - normalised(morf)[1:]) / k),
            "nabpc": float(np.sum(normalised(lerf)[1:] - normalised(morf)[1:]) / k)}


def curve_coalitions(phi: np.ndarray, steps: int, seed: int) -> tuple[list[str], int, np.ndarray]:
    """(curve names, steps used (at most M), bool (3 (steps + 1) + 1, M)): the MoRF, LeRF and random removal
    coalitions of attributions ``phi`` (M,), each curve's steps + 1 rows in turn, then the all-removed one."""
    m = len(phi)
    if steps < 1:
        raise InputError(f"--steps must be >= 1, got {steps}")
    steps = min(steps, m)
    orders = {"morf": np.argsort(-phi, kind="stable"), "lerf": np.argsort(phi, kind="stable"),
              "random": np.random.default_rng(seed).permutation(m)}
    rows = np.concatenate([removal_coalitions(orders[name], steps) for name in orders]
                          + [np.zeros((1, m), dtype=bool)])
    return list(orders), steps, rows


def faithfulness_curves(values_fn, phi: np.ndarray, steps: int, seed: int) -> dict:
    """faithfulness.json's content for attributions ``phi`` (M,) of the game ``values_fn(keep (n, M)) -> (n,)``."""
    m = len(phi)
    orders, steps, rows = curve_coalitions(phi, steps, seed)
    scores = np.asarray(values_fn(rows), dtype=float)
    curves = {name: scores[i * (steps + 1):(i + 1) * (steps + 1)] for i, name in enumerate(orders)}
    s_min = float(scores[-1])
    result = {"steps": steps,
              "fraction_removed": [round(k * m / steps) / m for k in range(steps + 1)],
              **{name: [float(v) for v in curve] for name, curve in curves.items()},
              "s0": float(curves["morf"][0]), "s_min": s_min}
    result.update(curve_metrics(curves["morf"], curves["lerf"], s_min))
    return result


def _request_from_summary(summary: dict, out_dir: Path):
    from SegSHAPLib.explain.run import ExplainRequest

    inputs = dict(summary["inputs"])
    fields = set(ExplainRequest.__dataclass_fields__)
    request = ExplainRequest(**{k: v for k, v in inputs.items() if k in fields})
    request.out = out_dir
    if request.roi_point is not None:
        request.roi_point = tuple(request.roi_point)
    for key in ("model", "ct", "roi_mask", "prediction", "organs"):
        value = getattr(request, key)
        setattr(request, key, None if value is None else Path(value))
    return request


def evaluate_output(out_dir, steps: int = 10, seed: int | None = None,
                    progress: Callable[[int, int], None] | None = None) -> dict:
    """Rebuild an explanation from its output folder, compute its faithfulness, write faithfulness.json and
    curves.png there (and curves_<value>.png per value function), and return the faithfulness dict.

    faithfulness.json holds the first value function's curves and metrics at the top level (``value`` names
    it), ``value_functions`` and ``by_value`` (the same keys per value function). A folder of an older
    single-value explanation (no ``value_functions`` in its summary) is read as its one value function.

    The curves' coalitions (of every value function, each once) are evaluated in batches of the solver's size,
    each journaled as soon as it is done, so an interrupted evaluation resumes where it stopped;
    ``progress(done, total)`` follows the coalitions that had to be computed."""
    from SegSHAPLib.explain.run import SOLVER_BATCH
    from SegSHAPLib.explain.context import prepare_context
    from SegSHAPLib.explain.journal import CoalitionJournal
    from SegSHAPLib.report.figures import curves_figure

    out_dir = Path(out_dir)
    summary_path = out_dir / "summary.json"
    if not summary_path.is_file():
        raise InputError(f"{out_dir} has no summary.json; give the --out folder of a finished segshap explain")
    summary = json.loads(summary_path.read_text())
    request = _request_from_summary(summary, out_dir)
    names = [u["name"] for u in summary["units"]]
    by_value = summary.get("by_value") or {request.value: summary}
    value_names = list(by_value)
    phis = {value: np.array([u["shap"] for u in by_value[value]["units"]], dtype=float) for value in value_names}
    context = prepare_context(request, units_volume=read_volume(out_dir / "units.nii.gz"), unit_names=names,
                              prediction_volume=read_volume(out_dir / "prediction.nii.gz"))
    legacy = None if "value_functions" in summary else request.value
    journal = CoalitionJournal(out_dir, context.n_units, value_names, legacy_value=legacy)
    seed = summary["solver"]["seed"] if seed is None else seed

    wanted = np.unique(np.concatenate([curve_coalitions(phis[value], steps, seed)[2] for value in value_names]),
                       axis=0)
    _, known = journal.lookup(wanted)
    missing = wanted[~known]
    for start in range(0, len(missing), SOLVER_BATCH):
        rows = missing[start:start + SOLVER_BATCH]
        journal.record(rows, context.values(rows, names=value_names))
        if progress is not None:
            progress(min(start + SOLVER_BATCH, len(missing)), len(missing))

    results = {}
    for k, value in enumerate(value_names):
        results[value] = faithfulness_curves(lambda keep: journal.lookup(keep)[0][:, k], phis[value], steps, seed)
        results[value]["value"] = value
        title = f"{request.units} units, {value} value"
        figure = curves_figure(results[value], title=title)
        (out_dir / f"curves_{value}.png").write_bytes(figure)
        if k == 0:
            (out_dir / "curves.png").write_bytes(figure)
    result = {**results[value_names[0]], "value_functions": value_names, "by_value": results}
    (out_dir / "faithfulness.json").write_text(json.dumps(result, indent=2) + "\n")
    return result
