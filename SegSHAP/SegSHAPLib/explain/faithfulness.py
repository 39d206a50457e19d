"""Faithfulness of an explanation: MoRF / LeRF / random removal curves, AOPC, ABPC and their normalised forms.

Units are ranked by phi. After removing the first n_k = round(k M / K) units of a ranking (k = 0..K), the score
s(k) is recomputed with the explanation's own operator and value function (same engine, same ROI, same removal
operator, ``--removal``). With s_max = s(0) and s_min = v(all units removed):

    AOPC  = (1/K) sum_{k=1..K} (s(0) - s_MoRF(k))
    ABPC  = (1/K) sum_{k=1..K} (s_LeRF(k) - s_MoRF(k))
    s~(k) = (s(k) - s_min) / (s_max - s_min + eps), and nAOPC, nABPC are the same sums over s~.

The random curve (a seeded permutation) is the reference a useful ranking must beat. Coalition values already
in the explanation's journal are reused, and new ones are journaled too. An explanation of several value
functions gets the curves of each (ranked by its own phi, scored by its own value), all their coalitions
evaluated together, once each.

``without_roi_units`` measures the "the unit contains the answer" caveat: the same curves with the units that
overlap the ROI kept in place and left out of the ranking. ``is_evaluated`` says whether a folder's
faithfulness.json is current without computing anything (``segshap cohort run --evaluate`` skips those).
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from SegSHAPLib import options
from SegSHAPLib.errors import InputError
from SegSHAPLib.explain.case_inputs import CaseInputs
from SegSHAPLib.explain.folder import CURVES_FILE, FAITHFULNESS_FILE, ExplanationFolder, attribution_file
from SegSHAPLib.explain.output_check import ATTRIBUTION_DIGEST_KEY, ATTRIBUTION_FILE, DIGESTS_KEY
from SegSHAPLib.explain.request import ExplainRequest
from SegSHAPLib.io.atomic_files import write_bytes_atomic, write_json_atomic

NORMALISATION_EPS = 1e-8
DEFAULT_STEPS = options.FAITHFULNESS_STEPS


def removal_coalitions(order: np.ndarray, steps: int, n_units: int | None = None,
                       always_kept: np.ndarray | None = None) -> np.ndarray:
    """bool (K+1, M): row k keeps every unit except the first round(k m / K) of ``order`` (0-based unit indices,
    m = len(order)). M = ``n_units`` (default m); units not in ``order`` are always kept."""
    m = len(order)
    n_units = m if n_units is None else n_units
    keep = np.ones((steps + 1, n_units), dtype=bool)
    for k in range(steps + 1):
        keep[k, order[:int(round(k * m / steps))]] = False
    return keep


def normalised(curve, s0: float, s_min: float) -> np.ndarray:
    """s~(k) = (s(k) - s_min) / (s(0) - s_min + eps) of a curve (K+1,)."""
    return (np.asarray(curve, dtype=float) - s_min) / (s0 - s_min + NORMALISATION_EPS)


def curve_metrics(morf: np.ndarray, lerf: np.ndarray, s_min: float) -> dict:
    """AOPC, ABPC, nAOPC and nABPC from curves of length K+1 (k = 0 first) and the all-removed score."""
    k = len(morf) - 1
    s0 = float(morf[0])
    morf_n, lerf_n = normalised(morf, s0, s_min), normalised(lerf, s0, s_min)
    return {"aopc": float(np.sum(s0 - morf[1:]) / k),
            "abpc": float(np.sum(lerf[1:] - morf[1:]) / k),
            "naopc": float(np.sum(morf_n[0] - morf_n[1:]) / k),
            "nabpc": float(np.sum(lerf_n[1:] - morf_n[1:]) / k)}


@dataclass
class CurvePlan:
    """The coalitions of one set of MoRF / LeRF / random curves and how their scores become faithfulness.json.

    rows: bool (3 (K+1) + 1, M): the MoRF, LeRF and random removal coalitions (K+1 each, k = 0 first), then the
    coalition with every ranked unit removed (s_min). orders: unit indices (0-based) in removal order.
    """

    steps: int
    ranked: int
    orders: dict[str, np.ndarray]
    rows: np.ndarray

    def result(self, scores: np.ndarray) -> dict:
        """faithfulness.json's curves and metrics from the scores (3 (K+1) + 1,) of ``rows``."""
        scores = np.asarray(scores, dtype=float)
        n = self.steps + 1
        curves = {name: scores[i * n:(i + 1) * n] for i, name in enumerate(self.orders)}
        s_min = float(scores[-1])
        result = {"steps": self.steps,
                  "fraction_removed": [round(k * self.ranked / self.steps) / self.ranked for k in range(n)],
                  **{name: [float(v) for v in curve] for name, curve in curves.items()},
                  "s0": float(curves["morf"][0]), "s_min": s_min}
        result.update(curve_metrics(curves["morf"], curves["lerf"], s_min))
        return result


def curve_plan(phi: np.ndarray, steps: int, seed: int, always_kept: np.ndarray | None = None) -> CurvePlan:
    """The removal coalitions for attributions ``phi`` (M,). ``always_kept`` (bool (M,), optional): units that
    are never removed and not ranked (the ROI-overlapping units of ``without_roi_units``); the fraction removed
    and K then count the other units only. InputError when steps < 1 or no unit is left to rank."""
    if steps < 1:
        raise InputError(f"--steps must be >= 1, got {steps}")
    m = len(phi)
    kept = np.zeros(m, dtype=bool) if always_kept is None else np.asarray(always_kept, dtype=bool)
    ranked = np.flatnonzero(~kept)
    if len(ranked) == 0:
        raise InputError("every unit is excluded from the ranking: nothing to remove")
    steps = min(steps, len(ranked))
    phi_ranked = np.asarray(phi, dtype=float)[ranked]
    orders = {"morf": ranked[np.argsort(-phi_ranked, kind="stable")],
              "lerf": ranked[np.argsort(phi_ranked, kind="stable")],
              "random": ranked[np.random.default_rng(seed).permutation(len(ranked))]}
    rows = np.concatenate([removal_coalitions(orders[name], steps, m) for name in orders] + [kept[None, :]])
    return CurvePlan(steps, len(ranked), orders, rows)


def faithfulness_curves(values_fn, phi: np.ndarray, steps: int, seed: int,
                        always_kept: np.ndarray | None = None) -> dict:
    """faithfulness.json's content for attributions ``phi`` (M,) of the game ``values_fn(keep (n, M)) -> (n,)``."""
    plan = curve_plan(phi, steps, seed, always_kept)
    return plan.result(values_fn(plan.rows))


def region_coverage(units_zyx: np.ndarray, region_zyx: np.ndarray, order: np.ndarray, steps: int) -> list[float]:
    """Fraction of the scoring region's voxels that lie in the units removed after each step k = 0..K of
    ``order`` (0-based unit indices; unit j + 1 in the (z, y, x) label map ``units_zyx``; 0 = no unit)."""
    n_units = int(units_zyx.max())
    per_unit = np.bincount(units_zyx[region_zyx].ravel(), minlength=n_units + 1)[1:]
    total = max(int(region_zyx.sum()), 1)
    m = len(order)
    return [float(per_unit[order[:int(round(k * m / steps))]].sum() / total) for k in range(steps + 1)]


def units_overlapping(units_zyx: np.ndarray, mask_zyx: np.ndarray, n_units: int) -> np.ndarray:
    """bool (M,): whether unit j + 1 of the (z, y, x) label map has a voxel in the mask."""
    overlap = np.zeros(n_units + 1, dtype=bool)
    overlap[np.unique(units_zyx[mask_zyx])] = True
    return overlap[1:]


def phi_digest(phi) -> str:
    """A short fingerprint of the attributions a faithfulness.json was computed for."""
    return hashlib.sha256(np.asarray(phi, dtype=np.float64).tobytes()).hexdigest()[:16]


def _phi_of(summary: dict) -> np.ndarray:
    return np.array([u["shap"] for u in summary["units"]], dtype=float)


def is_evaluated(out_dir, steps: int = DEFAULT_STEPS, without_roi_units: bool = False) -> bool:
    """Whether ``out_dir/faithfulness.json`` is current: computed with ``steps`` (and ``without_roi_units``
    when asked) for the attributions now in summary.json. Reads two JSON files, computes nothing."""
    folder = ExplanationFolder(out_dir)
    summary, result = folder.summary(), folder.faithfulness()
    if summary is None or result is None:
        return False
    return (result.get("steps_requested") == steps and result.get("phi_digest") == phi_digest(_phi_of(summary))
            and (not without_roi_units or "without_roi_units" in result))


def evaluate_output(out_dir, steps: int = DEFAULT_STEPS, seed: int | None = None,
                    progress: Callable[[int, int], None] | None = None, without_roi_units: bool = False) -> dict:
    """Rebuild an explanation from its output folder, compute its faithfulness, write curves.png (and
    curves_<value>.png per value function) and then faithfulness.json (naming the attribution it ranks) there, and
    return the faithfulness dict.

    faithfulness.json holds the first value function's curves and metrics at the top level (``value`` names
    it), ``value_functions`` and ``by_value`` (the same keys per value function, each ranked by its own phi and
    scored by its own value). A folder of an older single-value explanation (no ``value_functions`` in its
    summary) is read as its one value function.

    The folder is checked first (``output_check.check_output_folder``): parts that disagree are refused.
    ``without_roi_units`` adds ``without_roi_units``: the same curves and metrics with every unit that has a
    voxel in the ROI kept in place and left out of the ranking (docs/method.md, section 9). Every result
    carries ``region_coverage_morf`` (the fraction of the scoring region inside the units removed after each
    MoRF step) and ``evaluation`` (coalitions asked, computed now, patch forwards of this call).

    The curves' coalitions (all variants at once, each distinct coalition once) are evaluated in batches of the
    solver's size, each journaled as soon as it is done (the journal is open and locked meanwhile), so an
    interrupted evaluation resumes where it stopped; ``progress(done, total)`` follows the coalitions that had to
    be computed."""
    from SegSHAPLib.explain.run import SOLVER_BATCH
    from SegSHAPLib.explain.context import prepare_context
    from SegSHAPLib.explain.journal import CoalitionJournal
    from SegSHAPLib.report.figures import curves_figure

    out_dir = Path(out_dir)
    folder = ExplanationFolder(out_dir)
    summary = folder.finished_summary()
    request = dataclasses.replace(ExplainRequest.from_json(summary["inputs"]), out=out_dir)
    names = [u["name"] for u in summary["units"]]
    value_names = folder.value_functions(summary)
    phis = {value: _phi_of(folder.value_summary(value, summary)) for value in value_names}
    context = prepare_context(request, units_volume=folder.image("units"), unit_names=names,
                              inputs=CaseInputs(prediction=folder.image("prediction")))
    legacy = None if "value_functions" in summary else request.value
    seed = summary["solver"]["seed"] if seed is None else seed
    roi_units = units_overlapping(context.units.labels, context.roi, context.n_units)
    plans = {}                                         # (value function, variant) -> its curves
    for value in value_names:
        plans[value, "all"] = curve_plan(phis[value], steps, seed)
        if without_roi_units and not roi_units.all():
            plans[value, "without_roi_units"] = curve_plan(phis[value], steps, seed, always_kept=roi_units)
    rows = np.concatenate([plan.rows for plan in plans.values()])

    with CoalitionJournal(out_dir, context.n_units, value_names, legacy_value=legacy) as journal:
        values, known = journal.lookup(rows)                                   # (n, V)
        missing, where = np.unique(rows[~known], axis=0, return_inverse=True)   # curves share coalitions
        computed = np.empty((len(missing), len(value_names)))
        for start in range(0, len(missing), SOLVER_BATCH):
            batch = missing[start:start + SOLVER_BATCH]
            computed[start:start + len(batch)] = context.values(batch, names=value_names)
            journal.record(batch, computed[start:start + len(batch)])
            if progress is not None:
                progress(min(start + SOLVER_BATCH, len(missing)), len(missing))
    values[~known] = computed[where.reshape(-1)]

    offsets = np.cumsum([0] + [len(plan.rows) for plan in plans.values()])
    scores = {key: values[offsets[i]:offsets[i + 1], value_names.index(key[0])] for i, key in enumerate(plans)}
    digests = summary.get(DIGESTS_KEY, {})
    results = {}
    for k, value in enumerate(value_names):
        result = plans[value, "all"].result(scores[value, "all"])
        result["value"] = value
        result["removal"] = request.removal
        result["steps_requested"] = steps
        result["phi_digest"] = phi_digest(phis[value])
        result["region_coverage_morf"] = region_coverage(context.units.labels, context.region,
                                                         plans[value, "all"].orders["morf"], plans[value, "all"].steps)
        result["roi_units"] = [int(i) + 1 for i in np.flatnonzero(roi_units)]
        if without_roi_units:
            result["without_roi_units"] = (plans[value, "without_roi_units"].result(scores[value, "without_roi_units"])
                                           if (value, "without_roi_units") in plans else None)
        result["evaluation"] = {"coalitions": int(len(rows)), "computed": int(len(missing)),
                                "patch_forwards": int(context.engine.counters.patch_forwards)}
        result[ATTRIBUTION_DIGEST_KEY] = digests.get(ATTRIBUTION_FILE if k == 0 else attribution_file(value))
        results[value] = result
        figure = curves_figure(result, title=f"{request.units} units, {value} value, {request.removal} removal")
        write_bytes_atomic(out_dir / f"curves_{value}.png", figure)
        if k == 0:
            write_bytes_atomic(out_dir / CURVES_FILE, figure)
    result = {**results[value_names[0]], "value_functions": value_names, "by_value": results}
    write_json_atomic(out_dir / FAITHFULNESS_FILE, result)
    return result
