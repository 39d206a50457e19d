"""One source for every choice and default (SegSHAPLib.options): a default changed there reaches the request, the
CLI, the cohort manifest, the panel values and the Slicer parameter node; the .ui's combo items match the choices.

The changed default is set in a fresh Python process (a real subprocess) before any consumer is imported, so no
module of this test session is reloaded. SegSHAP.py is loaded with the Qt-side stand-ins of test_mrml_module.py
(no desktop Slicer here)."""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest

from SegSHAPLib import options

TESTING_DIR = Path(__file__).resolve().parent
MODULE_DIR = TESTING_DIR.parent
UI_FILE = MODULE_DIR / "Resources" / "UI" / "SegSHAP.ui"
CHANGED = dict(UNITS="fcc", BUDGET=96, FCC_SCALE_MM=45.0, VALUE="dice", SCORE_REGION="dilated", SEED=7,
               CHECKPOINT="checkpoint_best.pth", SLIC_SIZE_MM=25.0, REMOVAL="blur", BLUR_SIGMA_MM=12.0)
SEEN = ("units", "budget", "fcc_scale_mm", "value", "score_region", "seed", "checkpoint", "slic_size_mm", "removal",
        "blur_sigma_mm")                                                            # request / panel field names
NODE_NAMES = {"fcc_scale_mm": "fccScaleMm", "score_region": "scoreRegion", "slic_size_mm": "slicSizeMm",
              "blur_sigma_mm": "blurSigmaMm"}                                   # parameter node's names

CONSUMERS = """
import json, sys
from pathlib import Path
sys.path[:0] = [{module_dir!r}, {testing_dir!r}]
from SegSHAPLib import options
for name, value in json.loads({changed!r}).items():
    setattr(options, name, value)
import pytest
import test_options
monkeypatch = pytest.MonkeyPatch()
print(json.dumps(test_options.consumer_defaults(monkeypatch, Path({tmp!r}))))
"""


def consumer_defaults(monkeypatch, tmp_path: Path) -> dict:
    """The SEEN defaults as each consumer holds them: request, cli, manifest, panel, node."""
    from SegSHAPLib.explain.request import ExplainRequest
    from SegSHAPMRML.panel import PanelValues

    request, panel, node = ExplainRequest(model=Path("m"), out=Path("o")), PanelValues(), \
        _parameter_node(monkeypatch, tmp_path)
    cli, manifest = _cli_defaults(), _manifest_task(tmp_path).request
    return {"request": {k: getattr(request, k) for k in SEEN}, "panel": {k: getattr(panel, k) for k in SEEN},
            "node": {k: getattr(node, NODE_NAMES.get(k, k)) for k in SEEN},
            "cli": {k: getattr(cli, k) for k in SEEN if k not in ("units", "value")},
            "manifest": {k: getattr(manifest, k) for k in SEEN if k not in ("units", "value")}}


def test_a_changed_default_reaches_every_consumer(tmp_path):
    script = CONSUMERS.format(module_dir=str(MODULE_DIR), testing_dir=str(TESTING_DIR),
                              changed=json.dumps(CHANGED), tmp=str(tmp_path))
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    wanted = {k: CHANGED[k.upper()] for k in SEEN}
    for consumer, values in seen.items():
        assert values == {k: wanted[k] for k in values}, consumer


def test_the_unchanged_defaults_agree(tmp_path, monkeypatch):
    """In this process (options untouched) every consumer holds the options' defaults (they once disagreed: units
    'hybrid' in the request, 'organs' in the panel)."""
    wanted = {k: getattr(options, k.upper()) for k in SEEN}
    for consumer, values in consumer_defaults(monkeypatch, tmp_path).items():
        assert values == {k: wanted[k] for k in values}, consumer


def _cli_defaults():
    """The request ``segshap explain`` builds from its arguments (its parser leaves what is not given None, so
    that --refine can take it from the parent; the defaults are filled in by the request)."""
    from SegSHAPLib.cli.explain import request_from_args
    from SegSHAPLib.cli.main import build_parser

    return request_from_args(build_parser().parse_args(["explain", "--ct", "ct.nii.gz", "--model", "m", "--target",
                                                        "1", "--roi-point", "1,2,3", "--units", options.UNITS,
                                                        "--value", options.VALUE, "--out", "o"]))


def _manifest_task(tmp_path: Path):
    from SegSHAPLib.cohort.manifest import read_manifest

    (tmp_path / "ct.nii.gz").write_bytes(b"")
    (tmp_path / "m").mkdir()
    manifest = tmp_path / "study.csv"
    manifest.write_text(f"case_id,ct,model,target,roi_point,units,values\nc1,ct.nii.gz,m,1,\"1,2,3\","
                        f"{options.UNITS},{options.VALUE}\n")
    return read_manifest(manifest, tmp_path / "out")[0]


def _parameter_node(monkeypatch, tmp_path):
    """SegSHAP.py's SegSHAPParameterNode on a fresh scene, with the defaults it writes at creation (loaded in the
    stand-in Slicer environment ``slicer_standins``, which follows Slicer's parameterNodeWrapper rules)."""
    import slicer_standins
    from SegSHAPMRML import scene_io

    scene = scene_io.new_scene()
    slicer_standins.install(monkeypatch, scene, tmp_path)
    module = slicer_standins.load_module("SegSHAP_options_under_test")
    return module.SegSHAPParameterNode(scene.AddNewNodeByClass("vtkMRMLScriptedModuleNode"))


def _combo_items(parameter: str) -> list[str]:
    """The item texts of the .ui's combo box bound to the parameter node's ``parameter``."""
    for widget in ElementTree.parse(UI_FILE).getroot().iter("widget"):
        bound = [p.findtext("string") for p in widget.findall("property") if p.get("name") == "SlicerParameterName"]
        if widget.get("class") == "QComboBox" and bound == [parameter]:
            return [item.findtext("property/string") for item in widget.findall("item")]
    raise AssertionError(f"no QComboBox bound to {parameter} in {UI_FILE.name}")


@pytest.mark.parametrize("parameter, choices", [("units", options.UNIT_TYPES), ("value", options.VALUE_CHOICES),
                                                ("scoreRegion", options.SCORE_REGIONS),
                                                ("grouping", options.GROUPING_CHOICES),
                                                ("removal", options.REMOVALS)])
def test_ui_combo_items_are_the_options_choices(parameter, choices):
    assert _combo_items(parameter) == list(choices)


CHOICES = {"units": options.UNIT_TYPES, "value": options.VALUE_CHOICES, "scoreRegion": options.SCORE_REGIONS,
           "grouping": options.GROUPING_CHOICES, "roiMode": options.ROI_MODES, "removal": options.REMOVALS}


def test_parameter_node_choices_are_the_options_choices(monkeypatch, tmp_path):
    import typing

    hints = typing.get_type_hints(type(_parameter_node(monkeypatch, tmp_path)), include_extras=True)
    for name, choices in CHOICES.items():
        declared = [list(m.choices) for m in getattr(hints[name], "__metadata__", ()) if hasattr(m, "choices")]
        assert declared == [list(choices)], name


def test_options_module_imports_nothing():
    """SegSHAP.py imports it at load time, before the core's dependencies may be installed."""
    import ast

    tree = ast.parse(Path(options.__file__).read_text(encoding="utf-8"))
    assert not [node for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom))]


def test_every_value_function_choice_has_an_implementation():
    """The choices (options) and the implementations by name (scoring.values) name the same functions."""
    from SegSHAPLib.scoring.values import VALUE_FUNCTIONS

    assert set(VALUE_FUNCTIONS) == set(options.VALUE_FUNCTIONS)
