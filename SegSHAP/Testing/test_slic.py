"""SLIC units (--units slic, slic-hybrid): boundary-adherent supervoxels in millimetres, the unit-map contract, and
end to end on the cropped sample (explain with --verify exact, evaluate, the HTML report)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import CROPPED_CASES, DEMO_MODEL
from SegSHAPLib.cli.main import main
from SegSHAPLib.errors import InputError
from SegSHAPLib.explain.folder import ExplanationFolder
from SegSHAPLib.io.image_io import Volume
from SegSHAPLib.report.page import write_report
from SegSHAPLib.units import fcc_units, hybrid_units
from SegSHAPLib.units.fcc import cell_volume_mm3
from SegSHAPLib.units.slic import slic_units


def _two_organs(spacing_xyz=(2.0, 1.0, 3.0)) -> tuple[Volume, np.ndarray]:
    """A 96 mm cube of 0 HU with a bright (200 HU) sphere of radius 30 mm off its centre, on anisotropic voxels
    (x, y, z spacing), rotated by a direction matrix that swaps and flips axes; its organ map (sphere = 1, rest =
    2), both (z, y, x)."""
    shape = tuple(int(96 / s) for s in spacing_xyz[::-1])
    z, y, x = np.meshgrid(*(np.arange(n) * s for n, s in zip(shape, spacing_xyz[::-1])), indexing="ij")
    sphere = (z - 40) ** 2 + (y - 52) ** 2 + (x - 45) ** 2 < 30 ** 2
    noise = np.random.default_rng(0).normal(0, 10, shape)
    array = np.where(sphere, 200, 0) + noise
    direction = np.array([[0, 1, 0], [-1, 0, 0], [0, 0, 1]], dtype=float)
    return Volume(array.astype(np.int16), spacing_xyz, (10.0, -5.0, 3.0), direction), np.where(sphere, 1, 2)


def _adherence(units: np.ndarray, organs: np.ndarray) -> float:
    """Fraction of unit voxels lying in their unit's majority organ."""
    inside = units > 0
    table = np.zeros((units.max() + 1, organs.max() + 1), dtype=np.int64)
    np.add.at(table, (units[inside], organs[inside]), 1)
    return table.max(axis=1).sum() / inside.sum()


def test_slic_follows_the_organ_boundary_where_fcc_cuts_it():
    ct, organs = _two_organs()
    support = np.ones(ct.shape_zyx, dtype=bool)
    slic = slic_units(ct, support, 30.0, 0.1)
    fcc = fcc_units(ct, support, 30.0)
    assert _adherence(slic.labels, organs) > 0.99 > 0.95 > _adherence(fcc.labels, organs)
    # the size is FCC's scale: the mean unit volume is about an FCC cell's
    mean_volume = support.sum() * ct.voxel_volume_mm3() / slic.n_units
    assert 0.6 < mean_volume / cell_volume_mm3(30.0) < 1.6
    # contract: every support voxel in a unit numbered 1..M, names as FCC's, one SLIC label per unit
    assert (slic.labels > 0).all() and slic.names[0] == "cell 1" and len(set(slic.source_labels)) == slic.n_units


def test_slic_is_deterministic_and_stays_inside_the_support():
    ct, organs = _two_organs()
    support = np.zeros(ct.shape_zyx, dtype=bool)
    support[4:, 10:80, :40] = True
    first = slic_units(ct, support, 24.0, 0.1, organ_labels_zyx=organs, class_names={1: "spleen", 2: "liver"})
    second = slic_units(ct, support, 24.0, 0.1, organ_labels_zyx=organs, class_names={1: "spleen", 2: "liver"})
    assert np.array_equal(first.labels, second.labels) and first.names == second.names
    assert not first.labels[~support].any() and first.labels[support].all()
    assert any(name.endswith("(spleen)") for name in first.names)
    assert any(name.endswith("(liver)") for name in first.names)


def test_slic_hybrid_units_lie_in_one_organ():
    ct, organs = _two_organs()
    cells = slic_units(ct, np.ones(ct.shape_zyx, dtype=bool), 30.0, 0.1)
    hybrid = hybrid_units(cells, organs, {1: "spleen", 2: "liver"})
    assert _adherence(hybrid.labels, organs) == 1.0
    assert hybrid.n_units >= cells.n_units and all(" @ cell " in name for name in hybrid.names)


@pytest.mark.parametrize("size, compactness, message", [(0.0, 0.1, "--slic-size-mm must be a positive"),
                                                        (2.0, 0.1, "below the CT's coarsest voxel spacing"),
                                                        (30.0, -1.0, "--slic-compactness must be a positive"),
                                                        (100.0, 0.1, "gives a single unit"),
                                                        (500.0, 0.1, "smaller than a quarter of one supervoxel")])
def test_degenerate_parameters_are_refused(size, compactness, message):
    ct, _ = _two_organs()
    with pytest.raises(InputError, match=message):
        slic_units(ct, np.ones(ct.shape_zyx, dtype=bool), size, compactness)


@pytest.mark.parametrize("units", ["slic", "slic-hybrid"])
def test_explain_evaluate_and_report_end_to_end(units, cropped_cases, tmp_path, capsys):
    """The cropped false-positive case: explain with --verify exact, evaluate, and the HTML report."""
    _, point, space = CROPPED_CASES["liver_fp"]
    out = tmp_path / units
    argv = ["explain", "--ct", str(cropped_cases / "liver_fp_ct.nii.gz"), "--model", str(DEMO_MODEL),
            "--target", "spleen", f"--roi-point={point}", "--point-space", space, "--units", units,
            "--organs", str(cropped_cases / "liver_fp_organs.nii.gz"), "--slic-size-mm", "24", "--value", "softdice",
            "--budget", "8", "--verify", "1", "--out", str(out)]
    assert main(argv) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["inference"]["verify"]["max_abs_logit_diff"] == 0.0
    assert summary["inputs"]["units"] == units and summary["inputs"]["slic_size_mm"] == 24.0
    spec = json.loads((out / "journal_spec.json").read_text())
    assert spec["slic_size_mm"] == 24.0 and "fcc_scale_mm" not in spec and ("organs" in spec) == (units != "slic")
    assert main(["evaluate", str(out)]) == 0
    assert json.loads((out / "faithfulness.json").read_text())["aopc"] is not None
    html = write_report([ExplanationFolder(out)], tmp_path / "report.html", "slic").read_text()
    assert f"{units} units" in html
    capsys.readouterr()
