"""An explain output folder: its file names, and the one reader every caller uses (``ExplanationFolder``).

A folder written by ``run_explain`` holds ``attribution_<value>.nii.gz`` for every value function explained
(float32, phi of each voxel's unit; ``attribution_file``), ``attribution.nii.gz`` (the first one's), ``units.nii.gz`` (int32 unit ids), ``roi.nii.gz`` (uint8), ``prediction.nii.gz`` (the label map the ROI was taken
from), ``summary.json`` (written last and atomically), the coalition journal (``journal_spec.json``,
``journal.tsv``) and, after ``segshap evaluate``, ``faithfulness.json`` and ``curves.png``.

"Finished" is defined here alone: summary.json reads as JSON and the attribution, units and ROI images are
present. Readers: the faithfulness evaluation, the HTML report, the cohort (state, gather) and the Slicer adapters
(runs, results). Volumes are read as ``Volume`` (arrays (z, y, x) on the CT grid).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from SegSHAPLib.errors import InputError
from SegSHAPLib.explain.output_check import CURVES_FILE, FAITHFULNESS_FILE, SUMMARY_FILE, check_output_folder
from SegSHAPLib.explain.journal import journaled_coalitions, read_spec
from SegSHAPLib.io.atomic_files import read_json_or_none
from SegSHAPLib.io.image_io import Volume, read_volume

IMAGES = ("attribution", "units", "roi", "prediction")          # <name>.nii.gz, in the order they are written
REQUIRED_IMAGES = ("attribution", "units", "roi")               # a finished folder has these (prediction: may go)


def attribution_file(value: str) -> str:
    """The attribution map's file name for one value function (attribution.nii.gz is the first one's too)."""
    return f"attribution_{value}.nii.gz"


@dataclass
class ValueAttribution:
    """One value function's answer: phi (M,), standard errors (M,) (NaN where not estimable), v(empty), v(full)
    and the attribution map (float32 (z, y, x) on the CT grid)."""

    phi: np.ndarray
    std_error: np.ndarray
    phi0: float
    full_value: float
    attribution: Volume | None


@dataclass
class ExplainResult:
    """Everything an explanation produced (arrays of the volumes are (z, y, x) on the CT grid). Also what an
    output folder reads back as (``ExplanationFolder.load``), where ct/prediction are None if their files are
    gone."""

    out: Path
    ct: Volume | None
    prediction: Volume | None
    roi: Volume
    units: Volume
    unit_names: list[str]
    attribution: Volume
    phi: np.ndarray
    phi0: float
    full_value: float
    summary: dict
    by_value: dict[str, ValueAttribution] = field(default_factory=dict)   # every value function, first = phi's

    @property
    def value_functions(self) -> list[str]:
        return list(self.by_value)


class ExplanationFolder:
    """Read access to one explain output folder ``path`` (nothing is cached: a run may be writing it)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"ExplanationFolder({str(self.path)!r})"

    def image_path(self, name: str) -> Path:
        """The file of image ``name`` (one of IMAGES)."""
        return self.path / f"{name}.nii.gz"

    def image(self, name: str) -> Volume:
        return read_volume(self.image_path(name))

    def attribution_path(self, value: str) -> Path:
        """The attribution map of value function ``value`` (``attribution_file``)."""
        return self.path / attribution_file(value)

    def value_functions(self, summary: dict | None = None) -> list[str]:
        """The value functions explained, first = the one at summary.json's top level (``value_functions``; an
        older single-value folder: its inputs.value); [] without a summary."""
        summary = self.summary() if summary is None else summary
        if summary is None:
            return []
        return list(summary.get("value_functions") or [summary.get("inputs", {}).get("value", "value")])

    def value_summary(self, value: str, summary: dict | None = None) -> dict:
        """The summary keys (units, base_value, full_value, solver) of value function ``value`` (``by_value``;
        an older single-value folder: the top level for its one value); InputError when it was not explained."""
        summary = self.summary() if summary is None else summary
        names = self.value_functions(summary)
        if value not in names:
            raise InputError(f"{self.path} holds no explanation of value function {value!r} (it has "
                             f"{', '.join(names) or 'none'})")
        return (summary.get("by_value") or {names[0]: summary})[value]

    def summary(self) -> dict | None:
        """summary.json as a dict (None when absent or unreadable)."""
        return read_json_or_none(self.path / SUMMARY_FILE)

    def unit_names(self) -> list[str]:
        """The units' names in id order (summary.json's ``units``; [] without a readable summary)."""
        return [u["name"] for u in sorted((self.summary() or {}).get("units", []), key=lambda u: int(u["id"]))]

    def faithfulness(self) -> dict | None:
        """faithfulness.json as a dict (None when absent or unreadable)."""
        return read_json_or_none(self.path / FAITHFULNESS_FILE)

    def missing(self) -> list[str]:
        """The files a finished folder has and this one lacks (summary.json counts as missing when unreadable)."""
        missing = [f"{name}.nii.gz" for name in REQUIRED_IMAGES if not self.image_path(name).is_file()]
        return missing + ([SUMMARY_FILE] if self.summary() is None else [])

    def finished(self) -> bool:
        return not self.missing()

    def answers(self, request) -> bool:
        """Whether the folder is the finished explanation of ``request`` (an ``ExplainRequest``)."""
        summary = self.summary()
        return summary is not None and self.finished() and request.is_answered_by(summary)

    def finished_summary(self) -> dict:
        """summary.json of a finished folder whose parts belong together (``output_check``); InputError naming
        what is missing or disagrees otherwise."""
        missing = self.missing()
        if missing:
            raise InputError(f"{self.path} is not a complete explain output folder (missing {', '.join(missing)}); "
                             "run `segshap explain ... --out DIR` first")
        return check_output_folder(self.path, faithfulness=False)

    def spec(self) -> dict | None:
        """The journal spec (None when no journal was started)."""
        return read_spec(self.path)

    def journaled(self) -> int:
        """Coalitions in the journal."""
        return journaled_coalitions(self.path)

    def load(self, ct_path: str | os.PathLike | None = None) -> ExplainResult:
        """The folder read back as an ``ExplainResult``. The CT is ``ct_path`` or summary.json's inputs.ct when
        that file exists (else None); the prediction None when its file is gone."""
        summary = self.finished_summary()
        units_info = sorted(summary.get("units", []), key=lambda u: int(u["id"]))
        ids = [int(u["id"]) for u in units_info]
        if ids != list(range(1, len(ids) + 1)):
            raise InputError(f"{self.path / SUMMARY_FILE}: unit ids must be 1..M, got {ids[:5]}...")
        ct_file = _existing(ct_path) or _existing(summary.get("inputs", {}).get("ct"))
        prediction_file = _existing(self.image_path("prediction"))
        attribution = self.image("attribution")
        return ExplainResult(
            out=self.path,
            ct=read_volume(ct_file) if ct_file else None,
            prediction=read_volume(prediction_file) if prediction_file else None,
            roi=self.image("roi"),
            units=self.image("units"),
            unit_names=[str(u["name"]) for u in units_info],
            attribution=attribution,
            phi=np.array([float(u["shap"]) for u in units_info]),
            phi0=float(summary.get("base_value", float("nan"))),
            full_value=float(summary.get("full_value", float("nan"))),
            summary=summary,
            by_value=self._values(summary, attribution),
        )

    def _values(self, summary: dict, attribution: Volume) -> dict[str, ValueAttribution]:
        """Every value function of the folder (an older single-value folder: its one, from the top level and
        attribution.nii.gz); InputError when a value function's attribution map is missing."""
        values = {}
        for k, name in enumerate(self.value_functions(summary)):
            file = self.attribution_path(name)
            if k > 0 and not file.is_file():
                raise InputError(f"{self.path} is not a complete explain output folder (missing {file.name})")
            part = self.value_summary(name, summary)
            units = sorted(part.get("units", []), key=lambda u: int(u["id"]))
            values[name] = ValueAttribution(
                phi=np.array([float(u["shap"]) for u in units]),
                std_error=np.array([np.nan if u.get("std_error") is None else float(u["std_error"]) for u in units]),
                phi0=float(part.get("base_value", float("nan"))), full_value=float(part.get("full_value", float("nan"))),
                attribution=attribution if k == 0 else read_volume(file))
        return values


def _existing(path) -> Path | None:
    if not path:
        return None
    path = Path(path)
    return path if path.exists() else None
