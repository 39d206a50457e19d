"""``ExplainRequest``: every argument of one explanation, and its conversions (the only ones).

- ``to_json`` / ``from_json``: plain JSON types (paths as strings, the ROI point as a list) and back; the cohort
  plan stores requests this way.
- ``resolved_inputs``: summary.json's "inputs" (``to_json`` with every path absolute); ``from_json`` reads it back.
- ``from_args`` / ``command_line``: the ``segshap explain`` argparse namespace (field names are the flag names with
  '-' -> '_') and the argument list that parses back to the same request (for a child process).
- ``from_manifest_row``: the text cells of one cohort-manifest row (paths relative to the manifest's folder).
- ``journal_spec`` / ``is_answered_by``: what the coalition values depend on, and whether a summary answers it.
Defaults come from ``SegSHAPLib.options``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

from SegSHAPLib import __version__, options
from SegSHAPLib.errors import InputError
from SegSHAPLib.scoring.roi import parse_point

PATH_FIELDS = ("model", "out", "ct", "roi_mask", "prediction", "organs", "refine")     # the request's files and folders
TRUE_TEXTS, FALSE_TEXTS = ("true", "1", "yes"), ("false", "0", "no")


@dataclass
class ExplainRequest:
    """Every ``segshap explain`` argument; field names are the flag names with '-' -> '_'."""

    model: Path
    out: Path
    ct: Path | None = None
    target: str = options.TARGET
    roi_point: tuple[float, float, float] | None = None
    point_space: str = options.POINT_SPACE
    roi_mask: Path | None = None
    prediction: Path | None = None
    score_region: str = options.SCORE_REGION
    dilate_mm: float = options.DILATE_MM
    units: str = options.UNITS
    organs: Path | None = None
    fcc_scale_mm: float = options.FCC_SCALE_MM
    slic_size_mm: float = options.SLIC_SIZE_MM
    slic_compactness: float = options.SLIC_COMPACTNESS
    grouping: str | None = None
    value: str = options.VALUE
    budget: int = options.BUDGET
    seed: int = options.SEED
    mask_value: float = options.MASK_VALUE
    removal: str = options.REMOVAL
    blur_sigma_mm: float = options.BLUR_SIGMA_MM
    batch_size: int = options.BATCH_SIZE
    device: str = options.DEVICE
    cache: str = options.CACHE
    tta: bool = options.TTA
    tile_step: float = options.TILE_STEP
    fold: list[str] | None = None
    checkpoint: str = options.CHECKPOINT        # the file in each fold_X (nnU-Net's -chk), not a path
    verify: int = options.VERIFY
    refine: Path | None = None                  # zoom: a finished organ-unit explanation folder (the parent)
    refine_organs: list[str] | None = None      # zoom: parent units to split into hybrid cells ...
    refine_top: int | None = None               # ... or the top K parent units by |phi| (resolved into the above)
    case_cache: str | None = options.CASE_CACHE

    # ------------------------------------------------------------------------------------------ JSON
    def to_json(self) -> dict:
        """Every field as a plain JSON type: paths as given (strings), the ROI point as a list."""
        data = asdict(self)
        for key in PATH_FIELDS:
            data[key] = None if data[key] is None else str(data[key])
        data["roi_point"] = None if self.roi_point is None else list(self.roi_point)
        return data

    def resolved_inputs(self) -> dict:
        """summary.json's "inputs": every argument under its flag name, paths absolute."""
        inputs = self.to_json()
        for key in PATH_FIELDS:
            inputs[key] = _absolute(inputs[key])
        inputs["roi_point"] = None if self.roi_point is None else [float(v) for v in self.roi_point]
        inputs["grouping"] = self.grouping if self.grouping is None or not Path(self.grouping).is_file() \
            else _absolute(self.grouping)
        return inputs

    @classmethod
    def from_json(cls, data: dict) -> "ExplainRequest":
        """The request of ``to_json`` or of summary.json's "inputs" (keys that are not fields are ignored)."""
        names = {f.name for f in fields(cls)}
        request = {key: value for key, value in data.items() if key in names}
        for key in PATH_FIELDS:
            if request.get(key) is not None:
                request[key] = Path(request[key])
        if request.get("roi_point") is not None:
            request["roi_point"] = tuple(request["roi_point"])
        return cls(**request)

    # ------------------------------------------------------------------------------------------ CLI
    @classmethod
    def from_args(cls, args, base: "ExplainRequest | None" = None) -> "ExplainRequest":
        """The request of ``segshap explain``'s argparse namespace (``--roi-point`` text parsed; with ``--budget
        auto`` the budget is ``--cap``, the most coalitions the run may use). An argument left None (not given)
        takes ``base``'s value (a zoom's parent request), else the field's default."""
        given = {f.name: getattr(args, f.name) for f in fields(cls) if getattr(args, f.name, None) is not None}
        if given.get("budget") == options.BUDGET_AUTO:
            given["budget"] = getattr(args, "cap", None) or options.AUTO_CAP
        if given.get("roi_point") is not None:
            given["roi_point"] = parse_point(given["roi_point"])
        if base is None:
            return cls(**given)
        if "roi_point" in given or "roi_mask" in given:          # one ROI: the one given replaces the parent's
            base = replace(base, roi_point=None, roi_mask=None)
        return replace(base, **given)

    def command_line(self) -> list[str]:
        """The ``segshap explain`` arguments (after the subcommand's name) that make this request again
        (``from_args`` inverts it). Unset fields are left out, so the CLI's defaults apply."""
        arguments = []
        for name, value in asdict(self).items():
            flag = "--" + name.replace("_", "-")
            if value is None or value is False:
                continue
            if value is True:
                arguments.append(flag)
            elif name == "roi_point":
                arguments.append(f"{flag}=" + ",".join(repr(float(v)) for v in value))
            elif name == "fold":
                arguments += [part for fold in value for part in (flag, str(fold))]
            else:
                arguments += [flag, str(value)]
        return arguments

    # ------------------------------------------------------------------------------------------ manifest
    @classmethod
    def from_manifest_row(cls, cells: dict[str, str], base: Path, **given) -> "ExplainRequest":
        """The request of a manifest row's non-empty text ``cells`` (field name -> text); relative paths are
        taken from ``base`` (the manifest's folder) and must exist; ``given``: fields set by the cohort (out,
        units, value). Raises InputError naming the first bad cell."""
        request = {key: _field_from_text(key, text, base) for key, text in cells.items() if text}
        return cls(**request, **given)

    # ------------------------------------------------------------------------------------------ resume
    def journal_spec(self) -> dict:
        """What the coalition values depend on: every input but budget, seed, verify, out, case_cache and value
        (every value function defined for the region is journaled), and but the settings this request does not use
        (the FCC scale for organ units unless refined, the organ map and grouping for FCC and SLIC units, the SLIC
        size and compactness for other units, the mask value unless the removal is constant, the blur's sigma
        unless it is blur, the dilation unless the score region is dilated); a zoom's ``refine_top`` is resolved
        into ``refine_organs`` before this is asked (``explain.refine.resolve_refinement``). The removal operator
        is part of it unless it is ``constant`` (the only operator before there was a choice, so older journals
        still resume): an explanation with another operator never reuses the journal."""
        spec = self.resolved_inputs()
        for key in ("refine_top",) if self.refine else ("refine", "refine_organs", "refine_top"):
            spec.pop(key)
        unused = {"organs": () if self.refine else ("fcc_scale_mm",), "fcc": ("organs", "grouping"),
                  "slic": ("organs", "grouping", "fcc_scale_mm"), "slic-hybrid": ("fcc_scale_mm",)}.get(self.units, ())
        if self.units not in options.SLIC_UNIT_TYPES:
            unused += ("slic_size_mm", "slic_compactness")
        unused += {"constant": ("blur_sigma_mm", "removal"), "blur": ("mask_value",)}.get(
            self.removal, ("mask_value", "blur_sigma_mm"))
        if self.score_region != "dilated":
            unused += ("dilate_mm",)
        for key in ("budget", "seed", "verify", "out", "value", "case_cache") + unused:
            spec.pop(key)
        spec["segshap_version"] = __version__
        return spec

    def is_answered_by(self, summary: dict) -> bool:
        """Whether a summary.json (as a dict) is this request's finished explanation: the same journal spec (the
        version aside) and the same budget, seed, verify and value, and not ended by a cancel (solver.stop)."""
        wanted = self.journal_spec()
        wanted.pop("segshap_version")
        wanted.update(budget=self.budget, seed=self.seed, verify=self.verify, value=self.value)
        inputs = summary.get("inputs", {})
        finished = summary.get("solver", {}).get("stop") != "cancelled"
        return finished and json.loads(json.dumps(wanted)) == {key: inputs.get(key) for key in wanted}


def _absolute(path) -> str | None:
    """A path as an absolute string for summary.json (None stays None)."""
    return None if path is None else str(Path(path).resolve())


def _field_from_text(key: str, text: str, base: Path):
    """One manifest cell as the field's value: paths from ``base`` (must exist), numbers by the field's type,
    tta true/false, fold ';'-separated, the ROI point 'x,y,z' or 'x y z', grouping a file under ``base`` or a
    built-in name."""
    kind = {f.name: f.type for f in fields(ExplainRequest)}[key]
    if key in PATH_FIELDS:
        path = Path(text) if Path(text).is_absolute() else base / text
        if not path.exists():
            raise InputError(f"{key} {text!r} not found (looked for {path})")
        return path
    if key == "grouping":
        return str(base / text) if (base / text).is_file() else text
    if key == "roi_point":
        return parse_point(text, "roi_point")
    if kind in ("int", "float"):
        try:
            return int(text) if kind == "int" else float(text)
        except ValueError:
            raise InputError(f"{key} {text!r} is not {'a whole number' if kind == 'int' else 'a number'}") from None
    if kind == "bool":
        return parse_boolean(text, key)
    if key == "fold":
        return [fold.strip() for fold in text.split(";") if fold.strip()]
    return text


def parse_boolean(text: str, key: str) -> bool:
    """A manifest cell as a bool: true/false, 1/0, yes/no in any case; InputError naming ``key`` otherwise."""
    if text.lower() not in TRUE_TEXTS + FALSE_TEXTS:
        raise InputError(f"{key} {text!r}: give true or false")
    return text.lower() in TRUE_TEXTS
