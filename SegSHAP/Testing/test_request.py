"""ExplainRequest's conversions agree: JSON round trip, summary.json's inputs (absolute paths), the CLI's argparse
namespace and a manifest row give the same request for the same arguments."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from SegSHAPLib.cli.main import build_parser
from SegSHAPLib.errors import InputError
from SegSHAPLib.explain.request import PATH_FIELDS, ExplainRequest


@pytest.fixture
def files(tmp_path) -> Path:
    for name in ("ct.nii.gz", "organs.nii.gz"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "model").mkdir()
    return tmp_path


def test_json_round_trip_keeps_every_field(files):
    request = ExplainRequest(model=files / "model", out=files / "out", ct=files / "ct.nii.gz",
                             roi_point=(1.5, -2.0, 3.0), organs=files / "organs.nii.gz", units="hybrid",
                             fold=["0", "1"], tta=True, budget=64)
    data = json.loads(json.dumps(request.to_json()))
    assert ExplainRequest.from_json(data) == request
    assert all(isinstance(data[key], (str, type(None))) for key in PATH_FIELDS)


def test_summary_inputs_read_back_as_the_request_with_absolute_paths(files, monkeypatch):
    monkeypatch.chdir(files)
    request = ExplainRequest(model=Path("model"), out=Path("out"), ct=Path("ct.nii.gz"), roi_point=(1, 2, 3))
    inputs = json.loads(json.dumps(request.resolved_inputs()))
    assert inputs["ct"] == str(files / "ct.nii.gz") and inputs["roi_point"] == [1.0, 2.0, 3.0]
    assert ExplainRequest.from_json({**inputs, "segshap_version": "x"}) == ExplainRequest(
        model=files / "model", out=files / "out", ct=files / "ct.nii.gz", roi_point=(1.0, 2.0, 3.0))


def test_cli_args_and_a_manifest_row_give_the_same_request(files):
    args = build_parser().parse_args([
        "explain", "--ct", str(files / "ct.nii.gz"), "--model", str(files / "model"), "--target", "spleen",
        "--roi-point", "1,2,-3", "--units", "organs", "--organs", str(files / "organs.nii.gz"), "--value", "dice",
        "--budget", "32", "--fold", "0", "--fold", "2", "--tta", "--dilate-mm", "4.5", "--out", str(files / "o")])
    from_cli = ExplainRequest.from_args(args)
    cells = {"ct": "ct.nii.gz", "model": "model", "target": "spleen", "roi_point": "1 2 -3",
             "organs": "organs.nii.gz", "budget": "32", "fold": "0;2", "tta": "yes", "dilate_mm": "4.5"}
    from_row = ExplainRequest.from_manifest_row(cells, files, out=files / "o", units="organs", value="dice")
    assert from_cli == from_row
    assert from_row.roi_point == (1.0, 2.0, -3.0) and from_row.budget == 32 and from_row.tta is True


@pytest.mark.parametrize("cells, message", [
    ({"budget": "many"}, "not a whole number"),
    ({"mask_value": "air"}, "not a number"),
    ({"tta": "perhaps"}, "give true or false"),
    ({"ct": "missing.nii.gz"}, "not found"),
    ({"roi_point": "1,2"}, "three comma-separated numbers"),
])
def test_a_bad_manifest_cell_names_itself(files, cells, message):
    with pytest.raises(InputError, match=message):
        ExplainRequest.from_manifest_row({"model": "model", **cells}, files, out=files / "o")
