"""Where Apply puts a run (SegSHAPMRML.runs): the unfinished run of the same inputs is resumed in its folder, a
finished one with the same budget and seed is shown again, anything else gets a new folder (seeded with the
journal of a finished run of the same inputs). Earlier runs are made here the way run_explain leaves them:
journal_spec.json + journal.tsv, and for a finished run the output images and summary.json."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np
import pytest

from SegSHAPLib.explain.request import ExplainRequest
from SegSHAPLib.io.image_io import Volume
from SegSHAPLib.explain.journal import JOURNAL_FILE, SPEC_FILE, CoalitionJournal, journal_entries
from SegSHAPMRML import runs
from SegSHAPLib.explain.case_inputs import CaseInputs
from SegSHAPMRML.testing import synthetic_faithfulness, write_synthetic_output

pytestmark = pytest.mark.mrml

N_UNITS = 4
COALITIONS = np.array([[int(b) for b in f"{i:04b}"] for i in range(16)], dtype=bool)      # (16, 4)


def _request(**changes) -> ExplainRequest:
    fields = dict(model=Path("model"), out=Path("ignored"), target="spleen", roi_point=(1.0, 2.0, 3.0),
                  units="organs", value="softdice", budget=32, seed=0)
    return ExplainRequest(**{**fields, **changes})


def _inputs(ct_value: int = 0) -> CaseInputs:
    """In-memory inputs as the logic passes them: CT and organ map (z, y, x) = (2, 3, 4), organ names."""
    ct = Volume(np.full((2, 3, 4), ct_value, np.int16), (1.0, 1.0, 2.0), (0.0, 0.0, 0.0), np.eye(3))
    return CaseInputs(ct=ct, organs=ct.with_array(np.ones((2, 3, 4), np.uint8)), organ_names={1: "spleen"})


def _as_run_explain_leaves_it(plan: runs.RunPlan, inputs: CaseInputs, journaled: int, finished: bool = False) -> Path:
    """Write what run_explain leaves in ``plan``'s output folder after ``journaled`` coalitions (and at the end)."""
    out = Path(plan.request.out)
    out.mkdir(parents=True, exist_ok=True)
    request = dataclasses.replace(plan.request, **inputs.files(plan.request, plan.inputs_dir))
    (out / SPEC_FILE).write_text(json.dumps(request.journal_spec()))
    CoalitionJournal(out, N_UNITS, ["softdice"]).record(COALITIONS[:journaled],
                                                     np.arange(journaled, dtype=float)[:, None])
    if finished:
        write_synthetic_output(out, with_ct_file=False, seed=plan.request.seed)   # summary: budget 32
    return out


def test_first_run_gets_a_new_folder(tmp_path):
    plan = runs.plan_run(tmp_path, _request(), _inputs())
    assert plan.action == "new" and plan.journaled == 0 and plan.note == "" and plan.source is None
    assert plan.folder.parent == tmp_path and plan.folder.name.startswith("run-") and plan.folder.is_dir()
    assert Path(plan.request.out) == plan.folder / "explanation" and not Path(plan.request.out).exists()
    assert plan.inputs_dir.parent == tmp_path / "inputs"


def test_a_cancelled_run_is_resumed_in_its_folder_whatever_the_budget(tmp_path):
    first = runs.plan_run(tmp_path, _request(), _inputs())
    _as_run_explain_leaves_it(first, _inputs(), journaled=8)
    again = runs.plan_run(tmp_path, _request(budget=64, seed=3), _inputs())
    assert again.action == "resume" and again.request.out == first.request.out and again.journaled == 8
    assert again.note == f"resuming: 8 coalitions already computed ({first.folder.name})"
    assert again.request.budget == 64 and again.request.seed == 3
    assert len(list(tmp_path.glob("run-*"))) == 1                            # no new folder


@pytest.mark.parametrize("change", ["ct", "setting", "grouping_file"])
def test_other_inputs_start_a_new_folder(tmp_path, change):
    grouping = tmp_path / "groups.json"
    grouping.write_text('{"all": ["*"]}')
    first = runs.plan_run(tmp_path, _request(grouping=str(grouping)), _inputs())
    _as_run_explain_leaves_it(first, _inputs(), journaled=8)
    request, inputs = _request(grouping=str(grouping)), _inputs()
    if change == "ct":
        inputs = _inputs(ct_value=1)                                           # same geometry, other voxels
    elif change == "setting":
        request = _request(grouping=str(grouping), mask_value=-500.0)
    else:
        grouping.write_text('{"none": []}')                                   # same path, other content
    again = runs.plan_run(tmp_path, request, inputs)
    assert again.action == "new" and again.folder != first.folder and again.journaled == 0


def test_a_run_with_nothing_journaled_is_not_resumed(tmp_path):
    first = runs.plan_run(tmp_path, _request(), _inputs())
    _as_run_explain_leaves_it(first, _inputs(), journaled=0)
    assert runs.plan_run(tmp_path, _request(), _inputs()).action == "new"


def test_the_most_recently_journaled_unfinished_run_is_resumed(tmp_path):
    older = runs.plan_run(tmp_path, _request(), _inputs())
    newer = runs.plan_run(tmp_path, _request(), _inputs())          # nothing journaled yet: a second folder
    _as_run_explain_leaves_it(older, _inputs(), journaled=8)
    _as_run_explain_leaves_it(newer, _inputs(), journaled=3)
    os.utime(Path(older.request.out) / JOURNAL_FILE, (1e9, 1e9))
    assert runs.plan_run(tmp_path, _request(), _inputs()).request.out == newer.request.out
    os.utime(Path(newer.request.out) / JOURNAL_FILE, (1e8, 1e8))
    assert runs.plan_run(tmp_path, _request(), _inputs()).request.out == older.request.out


def test_a_finished_run_is_shown_again_with_the_same_budget_and_seed(tmp_path):
    first = runs.plan_run(tmp_path, _request(), _inputs())
    _as_run_explain_leaves_it(first, _inputs(), journaled=16, finished=True)
    again = runs.plan_run(tmp_path, _request(), _inputs())
    assert again.action == "show" and again.request.out == first.request.out
    assert "showing its results again (nothing recomputed)" in again.note
    result = runs.replay_finished(again.request)
    assert result.unit_names[0] == "spleen" and result.out == Path(first.request.out)
    stored = runs.stored_or_new_faithfulness(again.request.out, steps=synthetic_faithfulness()["steps"])
    assert stored == synthetic_faithfulness()


def test_faithfulness_with_other_steps_is_computed_anew(tmp_path, monkeypatch):
    import SegSHAPLib.explain.faithfulness as faithfulness

    write_synthetic_output(tmp_path / "out")
    calls = []
    monkeypatch.setattr(faithfulness, "evaluate_output", lambda out, steps: calls.append((out, steps)) or {"steps": steps})
    assert runs.stored_or_new_faithfulness(tmp_path / "out", steps=7) == {"steps": 7}
    assert calls == [(tmp_path / "out", 7)]


def test_a_larger_budget_after_a_finished_run_reuses_its_journal_in_a_new_folder(tmp_path):
    first = runs.plan_run(tmp_path, _request(), _inputs())
    _as_run_explain_leaves_it(first, _inputs(), journaled=16, finished=True)
    bigger = runs.plan_run(tmp_path, _request(budget=256), _inputs())
    assert bigger.action == "new" and bigger.folder != first.folder and bigger.source == first.folder
    assert bigger.journaled == 16 and bigger.note == f"resuming: 16 coalitions already computed ({first.folder.name})"
    out = Path(bigger.request.out)
    assert journal_entries(out) == journal_entries(Path(first.request.out))
    assert json.loads((out / SPEC_FILE).read_text()) == json.loads((Path(first.request.out) / SPEC_FILE).read_text())
    assert not (out / "summary.json").exists()                 # the finished run's results stay where they are


def test_inputs_digest_sees_voxels_geometry_names_and_grouping_content(tmp_path):
    base = _inputs().digest(None)
    assert _inputs().digest(None) == base
    assert _inputs(ct_value=5).digest(None) != base
    moved = dataclasses.replace(_inputs(), ct=Volume(_inputs().ct.array, (1.0, 1.0, 2.0), (0.0, 0.0, 9.0), np.eye(3)))
    assert moved.digest(None) != base
    assert dataclasses.replace(_inputs(), organ_names={1: "liver"}).digest(None) != base
    grouping = tmp_path / "g.json"
    grouping.write_text("{}")
    assert _inputs().digest(grouping) != base


def test_another_value_function_after_a_finished_run_reuses_every_coalition(tmp_path):
    """The journal holds every value function, so switching the value function recomputes nothing."""
    first = runs.plan_run(tmp_path, _request(), _inputs())
    _as_run_explain_leaves_it(first, _inputs(), journaled=16, finished=True)
    other = runs.plan_run(tmp_path, _request(value="tp"), _inputs())
    assert other.action == "new" and other.source == first.folder and other.journaled == 16


def test_a_cost_preview_plans_without_writing_anything(tmp_path):
    """``create=False`` (the panel's Estimate cost): no run folder is made; a new run's ``out`` is the finished
    same-inputs folder whose journal would seed it (so the preview counts those coalitions as done), else a folder
    that does not exist; a resume or a show again plans as Apply would."""
    fresh = runs.plan_run(tmp_path, _request(), _inputs(), create=False)
    assert fresh.action == "new" and not Path(fresh.request.out).exists() and not list(tmp_path.glob("run-*"))
    finished = _as_run_explain_leaves_it(runs.plan_run(tmp_path, _request(), _inputs()), _inputs(), 16, finished=True)
    other_seed = runs.plan_run(tmp_path, _request(seed=3), _inputs(), create=False)
    assert other_seed.action == "new" and Path(other_seed.request.out) == finished
    assert len(list(tmp_path.glob("run-*"))) == 1
    again = runs.plan_run(tmp_path, _request(), _inputs(), create=False)
    assert again.action == "show" and Path(again.request.out) == finished
