"""``segshap cohort gather``: every finished explanation of a study as one tidy table, ``OUT/cohort.csv``.

One row per (explanation, unit): ``case_id,units,value,unit_id,name,shap``, then the unit's size
and the explanation's cost and quality figures (the same for every unit of one explanation):
``voxels,base_value,full_value,method,coalitions,budget,seed,converged,patch_forwards,naive_patch_forwards,
patch_cache_hits,seconds``. Unfinished explanations are left out and named.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from SegSHAPLib.io.atomic_files import write_text_atomic
from SegSHAPLib.cohort.manifest import CohortTask
from SegSHAPLib.cohort.state import classify, is_explained, read_plan
from SegSHAPLib.explain.folder import ExplanationFolder

TABLE_FILE = "cohort.csv"
COLUMNS = ("case_id", "units", "value", "unit_id", "name", "shap", "voxels", "base_value", "full_value", "method",
           "coalitions", "budget", "seed", "converged", "patch_forwards", "naive_patch_forwards",
           "patch_cache_hits", "seconds")


def explanation_rows(task: CohortTask, summary: dict) -> list[dict]:
    """The table rows of one finished explanation (its summary.json as a dict)."""
    solver, inference = summary["solver"], summary["inference"]
    shared = {"base_value": summary["base_value"], "full_value": summary["full_value"], "method": solver["method"],
              "coalitions": solver["coalitions"], "budget": solver.get("budget"), "seed": solver["seed"],
              "converged": solver.get("diagnostics", {}).get("converged"),
              "patch_forwards": inference["patch_forwards"], "naive_patch_forwards": inference["naive_patch_forwards"],
              "patch_cache_hits": inference["patch_cache_hits"], "seconds": summary["timings_s"]["total"]}
    return [{"case_id": task.case_id, "units": task.units, "value": task.value, "unit_id": unit["id"],
             "name": unit["name"], "shap": unit["shap"], "voxels": unit["voxels"], **shared}
            for unit in summary["units"]]


def gather(out: Path) -> tuple[Path, int, list[str]]:
    """Write OUT/cohort.csv; return (its path, explanations in it, task ids not finished)."""
    out = Path(out)
    rows, gathered, unfinished = [], 0, []
    for task in read_plan(out):
        state, _ = classify(task)
        if not is_explained(state):
            unfinished.append(task.task_id)
            continue
        summary = ExplanationFolder(task.request.out).summary()
        rows.extend(explanation_rows(task, summary))
        gathered += 1
    path = out / TABLE_FILE
    write_text_atomic(path, csv_text(rows, COLUMNS))
    return path, gathered, unfinished


def csv_text(rows: list[dict], columns: tuple[str, ...]) -> str:
    """CSV text with a header of ``columns``; floats at full precision, None as an empty cell."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _cell(v) for k, v in row.items()})
    return buffer.getvalue()


def _cell(value):
    """Floats at full precision (repr), None as an empty cell."""
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    return value
