"""``segshap cohort report OUT``: a study's faithfulness and cost, summarised over cases, as HTML and CSV.

Reads every finished explanation of the study (its ``summary.json`` and, when evaluated, ``faithfulness.json``)
and writes into OUT:

- ``faithfulness_table.csv``: ``units,value,metric,mean,ci_low,ci_high,n`` - the paper's Table I (metric x value
  function rows, unit-type columns) in long form: the mean over cases of abpc, nabpc, aopc, naopc, its 95%
  percentile bootstrap interval (``report.statistics``: 10,000 resamples, seed 0) and the number of cases;
- ``curves.csv``: ``units,value,curve,fraction_removed,median,q25,q75,n`` - the normalised MoRF / LeRF /
  random-order curves of every case, interpolated onto a common grid of fractions removed, summarised;
- ``cost.csv``: per unit type, M, coalitions, patch forwards against the naive cost, hit rate, seconds;
- ``paired_tests.csv``: per value function and pair of unit types, the Wilcoxon signed-rank test of nABPC on
  the cases both have (or why no test was run);
- ``roi_caveat.csv``: per unit type and value function, the fraction of the scoring region inside the first
  MoRF step's units and nABPC recomputed without the units that overlap the ROI;
- ``report.html``: all of it with the curves' figure, self-contained.

Folder reading lives in ``read_explanation(folder, value)`` alone, so another layout of the folders (one folder
holding every value function) changes that function and ``study_explanations``, nothing else.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path

import numpy as np

from SegSHAPLib.cohort.gather import csv_text
from SegSHAPLib.cohort.state import classify, is_explained, read_plan
from SegSHAPLib.errors import InputError
from SegSHAPLib.options import UNIT_TYPES
from SegSHAPLib.explain.faithfulness import FAITHFULNESS_FILE, normalised
from SegSHAPLib.io.atomic_files import write_text_atomic
from SegSHAPLib.report.statistics import (BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED, CONFIDENCE, bootstrap_mean_interval,
                                          median_and_quartiles, on_grid, paired_wilcoxon)

REPORT_FILE = "report.html"
TABLE_FILE = "faithfulness_table.csv"
CURVES_FILE, COST_FILE, PAIRED_FILE, CAVEAT_FILE = "curves.csv", "cost.csv", "paired_tests.csv", "roi_caveat.csv"
METRICS = ("abpc", "nabpc", "aopc", "naopc")
TABLE_COLUMNS = ("units", "value", "metric", "mean", "ci_low", "ci_high", "n")
CURVE_COLUMNS = ("units", "value", "curve", "fraction_removed", "median", "q25", "q75", "n")
COST_COLUMNS = ("units", "explanations", "m_median", "m_min", "m_max", "coalitions", "patch_forwards",
                "naive_patch_forwards", "hit_rate", "seconds_per_coalition", "seconds_total")
PAIRED_COLUMNS = ("value", "metric", "first", "second", "pairs", "mean_difference", "statistic", "p_value", "note")
CAVEAT_COLUMNS = ("units", "value", "n", "region_covered_first_step", "roi_unit_share", "nabpc",
                  "nabpc_without_roi_units", "n_without")
CURVE_NAMES = ("morf", "lerf", "random")
FRACTION_GRID = np.linspace(0.0, 1.0, 21)
PAIRED_METRIC = "nabpc"


@dataclass
class Explained:
    """One finished explanation of the study: a case, a unit type, a value function, and what its folder says."""

    case_id: str
    units: str
    value: str
    summary: dict
    faithfulness: dict | None          # None when not evaluated


def read_explanation(folder: Path, value: str) -> tuple[dict, dict | None]:
    """(summary, faithfulness or None) of value function ``value`` in a finished explanation folder.

    Today's layout: one value function per folder, ``summary.json`` and ``faithfulness.json`` at its top. (The
    layout with every value function in one folder plugs in here: take ``summary["by_value"][value]`` and that
    value's faithfulness.)"""
    folder = Path(folder)
    summary = json.loads((folder / "summary.json").read_text())
    if summary["inputs"].get("value") != value:
        raise InputError(f"{folder} explains the value {summary['inputs'].get('value')!r}, not {value!r}")
    path = folder / FAITHFULNESS_FILE
    return summary, json.loads(path.read_text()) if path.is_file() else None


def study_explanations(out: Path) -> tuple[list[Explained], list[str]]:
    """(every finished explanation of the study in plan order, task ids not finished)."""
    explained, unfinished = [], []
    for task in read_plan(out):
        if not is_explained(classify(task)[0]):
            unfinished.append(task.task_id)
            continue
        summary, faithfulness = read_explanation(task.request.out, task.value)
        explained.append(Explained(task.case_id, task.units, task.value, summary, faithfulness))
    return explained, unfinished


def study_axes(explained: list[Explained]) -> tuple[list[str], list[str]]:
    """(unit types in UNIT_TYPES order, value functions in study order) present in the study."""
    units = [u for u in UNIT_TYPES if any(e.units == u for e in explained)]
    values = list(dict.fromkeys(e.value for e in explained))
    return units, values


def _evaluated(explained: list[Explained], units: str, value: str) -> list[Explained]:
    return [e for e in explained if (e.units, e.value) == (units, value) and e.faithfulness is not None]


def faithfulness_table(explained: list[Explained]) -> list[dict]:
    """TABLE_COLUMNS rows: per unit type, value function and metric, the mean over evaluated cases, its
    bootstrap interval and n (combinations without an evaluated case are left out)."""
    units, values = study_axes(explained)
    rows = []
    for value in values:
        for metric in METRICS:
            for unit_type in units:
                cases = _evaluated(explained, unit_type, value)
                if not cases:
                    continue
                mean, low, high = bootstrap_mean_interval([e.faithfulness[metric] for e in cases])
                rows.append({"units": unit_type, "value": value, "metric": metric, "mean": mean, "ci_low": low,
                             "ci_high": high, "n": len(cases)})
    return rows


def curve_panels(explained: list[Explained]) -> dict[tuple[str, str], dict]:
    """(units, value) -> median and quartiles over cases of each normalised curve on FRACTION_GRID
    (``report.study_figures.study_curves_figure``'s panels)."""
    units, values = study_axes(explained)
    panels = {}
    for unit_type in units:
        for value in values:
            cases = _evaluated(explained, unit_type, value)
            if not cases:
                continue
            panel = {"grid": FRACTION_GRID, "n": len(cases)}
            for name in CURVE_NAMES:
                curves = [on_grid(f["fraction_removed"], normalised(f[name], f["s0"], f["s_min"]), FRACTION_GRID)
                          for f in (e.faithfulness for e in cases)]
                panel[name] = median_and_quartiles(np.array(curves))
            panels[(unit_type, value)] = panel
    return panels


def curve_rows(panels: dict[tuple[str, str], dict]) -> list[dict]:
    """curves.csv's rows from ``curve_panels``."""
    rows = []
    for (unit_type, value), panel in panels.items():
        for name in CURVE_NAMES:
            median, q25, q75 = panel[name]
            rows.extend({"units": unit_type, "value": value, "curve": name, "fraction_removed": float(x),
                         "median": float(m), "q25": float(a), "q75": float(b), "n": panel["n"]}
                        for x, m, a, b in zip(panel["grid"], median, q25, q75))
    return rows


def cost_rows(explained: list[Explained]) -> list[dict]:
    """Per unit type, over every finished explanation of it: M (median, min, max), coalitions, patch forwards
    and the naive cost (sums), cache hit rate (hits / lookups over the sums), seconds per coalition and total."""
    rows = []
    for unit_type in study_axes(explained)[0]:
        mine = [e.summary for e in explained if e.units == unit_type]
        m = [len(s["units"]) for s in mine]
        coalitions = sum(s["solver"]["coalitions"] for s in mine)
        forwards = sum(s["inference"]["patch_forwards"] for s in mine)
        hits = sum(s["inference"]["patch_cache_hits"] for s in mine)
        seconds = sum(s["timings_s"]["total"] for s in mine)
        rows.append({"units": unit_type, "explanations": len(mine), "m_median": float(np.median(m)),
                     "m_min": min(m), "m_max": max(m), "coalitions": coalitions, "patch_forwards": forwards,
                     "naive_patch_forwards": sum(s["inference"]["naive_patch_forwards"] for s in mine),
                     "hit_rate": hits / (hits + forwards) if hits + forwards else 0.0,
                     "seconds_per_coalition": seconds / coalitions if coalitions else None,
                     "seconds_total": seconds})
    return rows


def paired_rows(explained: list[Explained], metric: str = PAIRED_METRIC) -> list[dict]:
    """Per value function and pair of unit types: the Wilcoxon signed-rank test of ``metric`` over the cases
    evaluated with both (mean difference = first - second)."""
    units, values = study_axes(explained)
    rows = []
    for value in values:
        for first, second in combinations(units, 2):
            a = {e.case_id: e.faithfulness[metric] for e in _evaluated(explained, first, value)}
            b = {e.case_id: e.faithfulness[metric] for e in _evaluated(explained, second, value)}
            cases = [case for case in a if case in b]
            test = paired_wilcoxon([a[c] for c in cases], [b[c] for c in cases])
            rows.append({"value": value, "metric": metric, "first": first, "second": second, "pairs": test.pairs,
                         "mean_difference": test.mean_difference, "statistic": test.statistic,
                         "p_value": test.p_value, "note": test.note})
    return rows


def caveat_rows(explained: list[Explained]) -> list[dict]:
    """Per unit type and value function, means over evaluated cases of: the fraction of the scoring region
    inside the units of the first MoRF step (the top-ranked ~1/K of the units), the share of units that
    overlap the ROI, nABPC and nABPC without the ROI-overlapping units (n_without: cases where some unit does
    not overlap the ROI and ``without_roi_units`` was computed)."""
    units, values = study_axes(explained)
    rows = []
    for value in values:
        for unit_type in units:
            cases = _evaluated(explained, unit_type, value)
            if not cases:
                continue
            faithfulness = [e.faithfulness for e in cases]
            without = [f["without_roi_units"]["nabpc"] for f in faithfulness if f.get("without_roi_units")]
            rows.append({"units": unit_type, "value": value, "n": len(cases),
                         "region_covered_first_step": _mean([f["region_coverage_morf"][1] for f in faithfulness
                                                             if f.get("region_coverage_morf")]),
                         "roi_unit_share": _mean([len(e.faithfulness["roi_units"]) / len(e.summary["units"])
                                                  for e in cases if "roi_units" in e.faithfulness]),
                         "nabpc": _mean([f["nabpc"] for f in faithfulness]),
                         "nabpc_without_roi_units": _mean(without), "n_without": len(without)})
    return rows


def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


@dataclass
class StudyReport:
    """What ``write_study_report`` wrote and left out."""

    html: Path
    csvs: list[Path]
    explanations: int
    evaluated: int
    unfinished: list[str]


def write_study_report(out: Path) -> StudyReport:
    """Write OUT/report.html and the CSVs of the module doc from the study's finished explanations.

    InputError when OUT is not a study or no explanation is finished yet."""
    from SegSHAPLib.report.study_figures import study_curves_figure
    from SegSHAPLib.report.study_page import (caveat_section, cost_section, curves_section, faithfulness_section,
                                              paired_section, write_study_page)

    out = Path(out)
    explained, unfinished = study_explanations(out)
    if not explained:
        raise InputError(f"no explanation of the study in {out} is finished yet; run `segshap cohort run` first "
                         "(`segshap cohort status` shows where it is)")
    units, values = study_axes(explained)
    evaluated = sum(e.faithfulness is not None for e in explained)
    table, panels = faithfulness_table(explained), curve_panels(explained)
    tables = {TABLE_FILE: (table, TABLE_COLUMNS), CURVES_FILE: (curve_rows(panels), CURVE_COLUMNS),
              COST_FILE: (cost_rows(explained), COST_COLUMNS), PAIRED_FILE: (paired_rows(explained), PAIRED_COLUMNS),
              CAVEAT_FILE: (caveat_rows(explained), CAVEAT_COLUMNS)}
    csvs = [write_text_atomic(out / name, csv_text(rows, columns)) for name, (rows, columns) in tables.items()]
    sections = [cost_section(tables[COST_FILE][0])]
    if evaluated:
        sections[:0] = [faithfulness_section(table, units, values, BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED, CONFIDENCE),
                        curves_section(study_curves_figure(panels, units, values), len(FRACTION_GRID))]
        sections += [paired_section(tables[PAIRED_FILE][0]), caveat_section(tables[CAVEAT_FILE][0])]
    cases = len({e.case_id for e in explained})
    facts = {"study": str(out.resolve()),
             "explanations": f"{len(explained)} finished ({cases} cases x {len(units)} unit types x {len(values)} "
                             f"value functions), {evaluated} with faithfulness"}
    if unfinished:
        facts["not finished (left out)"] = ", ".join(unfinished)
    if evaluated < len(explained):
        facts["not evaluated"] = (f"{len(explained) - evaluated} explanations have no faithfulness.json: rerun "
                                  "`segshap cohort run MANIFEST --out OUT --evaluate`")
    html = write_study_page(out / REPORT_FILE, "SegSHAP study report", values, sections, facts)
    return StudyReport(html, csvs, len(explained), evaluated, unfinished)
