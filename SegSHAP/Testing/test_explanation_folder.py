"""ExplanationFolder: "finished" (summary.json readable and the attribution, units and ROI images present), whether
a folder answers a request, and the folder read back (a synthetic output folder written with real NIfTI files)."""

from __future__ import annotations

import dataclasses
import json

import pytest

from SegSHAPLib.errors import InputError
from SegSHAPLib.explain.folder import SUMMARY_FILE, ExplanationFolder
from SegSHAPLib.explain.request import ExplainRequest

pytestmark = pytest.mark.mrml          # the synthetic folder comes from SegSHAPMRML.testing


@pytest.fixture
def written(tmp_path):
    from SegSHAPMRML.testing import write_synthetic_output

    out = tmp_path / "explanation"
    result = write_synthetic_output(out, with_ct_file=False, faithfulness=True)
    return out, result


def test_a_written_folder_is_finished_and_reads_back(written):
    out, result = written
    folder = ExplanationFolder(out)
    assert folder.finished() and folder.missing() == []
    loaded = folder.load()
    assert loaded.unit_names == result.unit_names and (loaded.phi == result.phi).all()
    assert folder.faithfulness() is not None and folder.summary()["units"] == loaded.summary["units"]


@pytest.mark.parametrize("damage, missing", [
    (lambda out: (out / SUMMARY_FILE).unlink(), [SUMMARY_FILE]),
    (lambda out: (out / SUMMARY_FILE).write_text('{"units": ['), [SUMMARY_FILE]),     # torn: not finished
    (lambda out: (out / "units.nii.gz").unlink(), ["units.nii.gz"]),
])
def test_a_damaged_folder_is_not_finished_and_says_what_is_missing(written, damage, missing):
    out, _ = written
    damage(out)
    folder = ExplanationFolder(out)
    assert not folder.finished() and folder.missing() == missing
    with pytest.raises(InputError, match=f"missing {missing[0]}"):
        folder.load()


def test_a_finished_folder_answers_only_its_own_request(written):
    out, _ = written
    request = ExplainRequest(model=out.parent / "model", out=out, roi_point=(1.0, 2.0, 3.0), budget=32)
    summary = json.loads((out / SUMMARY_FILE).read_text())
    (out / SUMMARY_FILE).write_text(json.dumps({**summary, "inputs": request.resolved_inputs()}))
    folder = ExplanationFolder(out)
    assert folder.answers(request)
    assert not folder.answers(dataclasses.replace(request, seed=99))
    assert not folder.answers(dataclasses.replace(request, units="fcc"))
