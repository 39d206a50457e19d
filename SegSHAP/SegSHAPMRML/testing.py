"""Hand-made explanation results for tests and demos of the MRML layer (no model run needed).

``synthetic_result()`` builds an ``ExplanationOutputs`` (same fields as ``ExplainResult``) on a small grid with a
rotated direction and anisotropic spacing; ``write_synthetic_output(dir)`` writes it as an explain output folder
(attribution/units/roi/prediction .nii.gz, summary.json with the keys of docs/architecture.md, faithfulness.json). The numbers
are made up; only shapes, names and geometry matter here.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from SegSHAPLib.io.image_io import Volume, write_volume

from .results import ExplanationOutputs

UNIT_NAMES = ("spleen", "kidney_left", "stomach", "colon", "rib cage")
PHI = (0.31, -0.12, 0.05, -0.02, 0.0)


def rotated_direction(angle_deg: float = 30.0) -> np.ndarray:
    """An LPS direction matrix rotated about z by ``angle_deg`` and tilted about x (non-trivial, orthonormal)."""
    a, b = np.deg2rad(angle_deg), np.deg2rad(10.0)
    rz = np.array([[np.cos(a), -np.sin(a), 0.0], [np.sin(a), np.cos(a), 0.0], [0.0, 0.0, 1.0]])
    rx = np.array([[1.0, 0.0, 0.0], [0.0, np.cos(b), -np.sin(b)], [0.0, np.sin(b), np.cos(b)]])
    return rz @ rx


def synthetic_result(shape_zyx=(7, 12, 14), spacing=(0.8, 1.1, 2.5), origin=(-12.0, 30.5, 101.0),
                     unit_names=UNIT_NAMES, phi=PHI, out: str | Path = "synthetic", seed: int = 0,
                     with_ct: bool = True) -> ExplanationOutputs:
    """A consistent fake result: units are slabs along x, the ROI sits inside unit 1, attribution = phi[unit]."""
    rng = np.random.default_rng(seed)
    direction = rotated_direction()
    nz, ny, nx = shape_zyx
    ct = Volume(rng.integers(-1000, 1200, shape_zyx).astype(np.int16), tuple(spacing), tuple(origin), direction)
    units = np.zeros(shape_zyx, np.int32)
    edges = np.linspace(1, nx - 1, len(unit_names) + 1).astype(int)
    for j in range(len(unit_names)):
        units[1:nz - 1, 1:ny - 1, edges[j]:edges[j + 1]] = j + 1
    phi = np.asarray(phi, dtype=float)
    attribution = np.concatenate([[0.0], phi]).astype(np.float32)[units]
    roi = np.zeros(shape_zyx, np.uint8)
    roi[2:nz - 2, 3:ny - 3, edges[0]:edges[1]] = 1
    prediction = roi.copy()
    prediction[1:3, 1:3, edges[2]:edges[3]] = 1                 # a second (false-positive) component
    zyx = np.argwhere(roi > 0)[len(np.argwhere(roi > 0)) // 2]
    point_ijk = [int(zyx[2]), int(zyx[1]), int(zyx[0])]
    point_ras = [float(v) for v in ct.ijk_to_ras(np.array(point_ijk, dtype=float))]
    counts = np.bincount(units.ravel(), minlength=len(unit_names) + 1)[1:]
    summary = {
        "version": 1,
        "segshap_version": "0.1.0",
        "inputs": {"ct": None, "model": None, "target": "1", "roi_point": point_ras, "point_space": "ras",
                   "units": "organs", "value": "softdice", "score_region": "box", "budget": 32, "seed": seed,
                   "mask_value": -1024.0, "device": "cpu", "cache": "memo", "tta": False, "fcc_scale_mm": 30.0,
                   "grouping": None},
        "roi": {"voxels": int(roi.sum()), "bbox_ijk": [[0, 1], [0, 1], [0, 1]], "support_bbox_ijk": [[0, 1]] * 3,
                "target": 1, "point_ijk": point_ijk},
        "units": [{"id": j + 1, "name": n, "voxels": int(counts[j]), "shap": float(phi[j])}
                  for j, n in enumerate(unit_names)],
        "base_value": 0.1, "full_value": 0.1 + float(phi.sum()),
        "solver": {"method": "exact", "coalitions": 32, "seed": seed,
                   "diagnostics": {"efficiency_residual": 0.0, "condition_number": 3.2}},
        "inference": {"patches_full_grid": 8, "patches_in_support": 4, "patch_forwards": 120,
                      "patch_cache_hits": 900, "naive_patch_forwards": 256, "hit_rate": 0.88},
        "timings_s": {"total": 1.5, "inference": 1.0, "solver": 0.1},
    }
    return ExplanationOutputs(Path(out), ct if with_ct else None, ct.with_array(prediction), ct.with_array(roi),
                              ct.with_array(units), list(unit_names), ct.with_array(attribution), phi,
                              0.1, 0.1 + float(phi.sum()), summary)


def synthetic_faithfulness(steps: int = 4) -> dict:
    fractions = [k / steps for k in range(steps + 1)]
    morf = [1.0 - 0.9 * f ** 0.5 for f in fractions]
    lerf = [1.0 - 0.9 * f ** 3 for f in fractions]
    rand = [1.0 - 0.9 * f for f in fractions]
    aopc = float(np.mean([morf[0] - m for m in morf[1:]]))
    abpc = float(np.mean([l - m for l, m in zip(lerf[1:], morf[1:])]))
    return {"steps": steps, "fraction_removed": fractions, "morf": morf, "lerf": lerf, "random": rand,
            "s0": 1.0, "s_min": 0.1, "aopc": aopc, "abpc": abpc, "naopc": aopc / 0.9, "nabpc": abpc / 0.9}


def write_synthetic_output(out_dir: str | Path, *, with_ct_file: bool = True, faithfulness: bool = True,
                           **kwargs) -> ExplanationOutputs:
    """Write ``synthetic_result()`` as an explain output folder (and the CT next to it when asked)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    result = synthetic_result(out=out, **kwargs)
    if with_ct_file:
        ct_path = out.parent / f"{out.name}_ct.nii.gz"
        write_volume(result.ct, ct_path)
        result.summary["inputs"]["ct"] = str(ct_path.resolve())
    for name in ("attribution", "units", "roi", "prediction"):
        write_volume(getattr(result, name), out / f"{name}.nii.gz")
    (out / "summary.json").write_text(json.dumps(result.summary, indent=2))
    if faithfulness:
        (out / "faithfulness.json").write_text(json.dumps(synthetic_faithfulness(), indent=2))
    return result


__all__ = ["synthetic_result", "synthetic_faithfulness", "write_synthetic_output", "rotated_direction",
           "UNIT_NAMES", "PHI"]
