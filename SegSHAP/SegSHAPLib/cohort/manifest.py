"""The cohort manifest (CSV) -> the explanations of a study, one ``CohortTask`` each.

One row per case; the columns (docs/cohort.md, section 1) are
``case_id,ct,model,target,roi_point,point_space,roi_mask,organs,units,values,score_region,budget,seed``.
``units`` and ``values`` are ``;``-separated lists: every case is explained once per unit type, and each of those
explanations answers all the row's value functions from the same coalitions (2 unit types x 2 value functions =
2 explanations, 4 answers; the first value function listed is each explanation's first; ``all``: every one
defined for the scoring region). ``evaluate`` (true/false, default false) also computes each explanation's
faithfulness (``faithfulness.json``, as ``segshap evaluate --without-roi-units`` does). Paths are relative to the
manifest's folder. Empty cells (and missing optional columns) take the ``segshap explain`` defaults. Any other ``segshap explain`` option may be given as an extra column named
after its flag (``fcc_scale_mm`` or ``fcc-scale-mm``, ``grouping``, ``dilate_mm``, ``mask_value``,
``prediction``, ``batch_size``, ``cache``, ``tta``, ``tile_step``, ``fold``, ``checkpoint``, ``verify``); ``out`` and
``device`` are the cohort's to decide. ``roi_point`` is ``x,y,z`` (quote it in the CSV) or ``x y z``.

Every problem of the whole manifest is reported at once, before anything runs, with its line number.
"""

from __future__ import annotations

import csv
import dataclasses
import re
from dataclasses import dataclass, fields
from pathlib import Path

from SegSHAPLib import options
from SegSHAPLib.errors import InputError
from SegSHAPLib.explain.request import ExplainRequest, parse_boolean
from SegSHAPLib.explain.context import check_request

EXPLANATIONS_FOLDER = "explanations"
MANIFEST_COLUMNS = ("case_id", "ct", "model", "target", "roi_point", "point_space", "roi_mask", "organs", "units",
                  "values", "score_region", "budget", "seed")
COHORT_COLUMNS = ("evaluate",)     # per case, for the cohort rather than for segshap explain
REQUIRED_COLUMNS = ("case_id", "ct", "model", "target", "units", "values")
COHORT_OWNED = ("out", "device")
CASE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.-]*(_[A-Za-z0-9.-]+)*$")   # no "__": it separates task-id parts
MAX_PROBLEMS_SHOWN = 12


@dataclass
class CohortTask:
    """One explanation of the study: a case crossed with one unit type, answering all the row's value functions."""

    case_id: str
    units: str
    values: list[str]
    request: ExplainRequest            # request.out = OUT/explanations/<task_id>, request.value = the values, ","
    evaluate: bool = False             # also write faithfulness.json (explain.faithfulness.evaluate_output)

    @property
    def task_id(self) -> str:
        return task_id(self.case_id, self.units)

    def to_json(self) -> dict:
        """Plain JSON types (the request's ``to_json``)."""
        return {"task_id": self.task_id, "case_id": self.case_id, "units": self.units, "values": self.values,
                "evaluate": self.evaluate, "request": self.request.to_json()}

    @classmethod
    def from_json(cls, data: dict) -> "CohortTask":
        return cls(data["case_id"], data["units"], list(data["values"]), ExplainRequest.from_json(data["request"]),
                   bool(data.get("evaluate", False)))


def task_id(case_id: str, units: str) -> str:
    """The folder name of one explanation: ``<case_id>__<units>``."""
    return f"{case_id}__{units}"


def read_manifest(manifest: str | Path, out: str | Path) -> list[CohortTask]:
    """Every explanation the manifest asks for, in manifest order (case, then units).

    Raises InputError listing every problem found (unknown columns, bad or duplicate case ids, missing files,
    bad numbers, unknown unit types or value functions, ROI given twice or not at all, ...).
    """
    manifest = Path(manifest)
    if not manifest.is_file():
        raise InputError(f"manifest {manifest} not found; give a CSV file with the columns "
                         f"{','.join(MANIFEST_COLUMNS)}")
    try:
        with open(manifest, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            columns = [_column_name(c) for c in (reader.fieldnames or [])]
            _check_columns(manifest, columns)
            rows = [(reader.line_num, len(row.get(None, ())),
                     {_column_name(k): (v or "").strip() for k, v in row.items() if k is not None})
                    for row in reader]
    except UnicodeDecodeError as err:
        raise InputError(f"manifest {manifest} is not UTF-8 text (byte 0x{err.object[err.start]:02x} at offset "
                         f"{err.start}); save it as UTF-8 (e.g. 'CSV UTF-8' in a spreadsheet)") from None
    problems, tasks, seen = [], [], {}
    for line, extra, row in rows:
        if not any(row.values()):
            continue                                   # a blank line
        if extra:
            problems.append(f"line {line} has {extra} more field(s) than the header: quote a roi_point that "
                            'holds commas ("x,y,z") or write it as x y z')
            continue
        case_id = row.get("case_id", "")
        if case_id in seen:
            problems.append(f"line {line}: case_id {case_id!r} repeats line {seen[case_id]}")
            continue
        seen[case_id] = line
        try:
            tasks.extend(_tasks_of_row(row, manifest.parent.resolve(), Path(out)))
        except InputError as err:
            problems.append(f"line {line} ({case_id or 'no case_id'}): {err}")
    if problems:
        shown = problems[:MAX_PROBLEMS_SHOWN]
        more = f"; and {len(problems) - len(shown)} more" if len(problems) > len(shown) else ""
        raise InputError(f"manifest {manifest}: " + "; ".join(shown) + more)
    if not tasks:
        raise InputError(f"manifest {manifest} has no cases")
    return tasks


def select_part(tasks: list[CohortTask], part_id: int, num_parts: int) -> list[CohortTask]:
    """Part ``part_id`` of ``num_parts`` (the tasks whose manifest position is part_id modulo num_parts), so
    independent jobs (a scheduler's array job) can share a study without talking to each other."""
    if num_parts < 1 or not 0 <= part_id < num_parts:
        raise InputError(f"--part-id {part_id} --num-parts {num_parts}: need 0 <= part-id < num-parts")
    return tasks[part_id::num_parts]


def _column_name(name: str) -> str:
    return name.strip().replace("-", "_")


def _check_columns(manifest: Path, columns: list[str]) -> None:
    request_fields = {f.name for f in fields(ExplainRequest)}
    known = set(MANIFEST_COLUMNS) | set(COHORT_COLUMNS) | request_fields
    unknown = [c for c in columns if c not in known]
    owned = [c for c in columns if c in COHORT_OWNED]
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if unknown or owned or missing:
        parts = []
        if missing:
            parts.append(f"missing columns {', '.join(missing)}")
        if unknown:
            parts.append(f"unknown columns {', '.join(unknown)} (known: {', '.join(sorted(known - set(COHORT_OWNED)))})")
        if owned:
            parts.append(f"columns {', '.join(owned)} are set by the cohort (--out, --gpus), not per case")
        raise InputError(f"manifest {manifest}: " + "; ".join(parts))


def _tasks_of_row(row: dict, base: Path, out: Path) -> list[CohortTask]:
    case_id = row.get("case_id", "")
    if not CASE_ID.match(case_id):
        raise InputError(f"case_id {case_id!r}: use letters, digits, '.', '-' and single '_' (it names folders)")
    units = _split_list(row.get("units", ""), "units", options.UNIT_TYPES)
    values = _split_list(row.get("values", ""), "values", options.VALUE_CHOICES)
    evaluate = parse_boolean(row["evaluate"], "evaluate") if row.get("evaluate") else False
    cells = {key: text for key, text in row.items() if key not in ("case_id", "units", "values") + COHORT_COLUMNS}
    case_request = ExplainRequest.from_manifest_row(cells, base, out=out)
    if case_request.roi_point is None and case_request.roi_mask is None:
        raise InputError("give roi_point or roi_mask")
    tasks = []
    for unit_type in units:
        request = dataclasses.replace(case_request, units=unit_type, value=",".join(values),
                                      out=out / EXPLANATIONS_FOLDER / task_id(case_id, unit_type))
        check_request(request, roi_mask_in_memory=False)
        tasks.append(CohortTask(case_id, unit_type, values, request, evaluate))
    return tasks


def _split_list(text: str, column: str, allowed: tuple[str, ...]) -> list[str]:
    items = [item.strip() for item in text.split(";") if item.strip()]
    if not items:
        raise InputError(f"{column} is empty; give a ';'-separated list of {', '.join(allowed)}")
    wrong = [item for item in items if item not in allowed]
    if wrong:
        raise InputError(f"{column}: unknown {', '.join(wrong)}; choose from {', '.join(allowed)}")
    if len(set(items)) != len(items):
        raise InputError(f"{column} {text!r} names an entry twice")
    return items
