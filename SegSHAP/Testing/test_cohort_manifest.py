"""The cohort manifest, sharding, worker slots and the cohort commands' bad-input errors (no engine runs)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from SegSHAPLib.cli.main import main
from SegSHAPLib.cohort.local import worker_slots
from SegSHAPLib.cohort.manifest import CohortTask, read_manifest, select_part
from SegSHAPLib.errors import InputError

from conftest import DEMO_MODEL, SAMPLE_CT, SAMPLE_ORGANS

HEADER = "case_id,ct,model,target,roi_point,point_space,roi_mask,organs,units,values,score_region,budget,seed"


@pytest.fixture
def folder(tmp_path) -> Path:
    """A manifest folder holding the sample CT and organ map under relative names."""
    (tmp_path / "ct.nii.gz").symlink_to(SAMPLE_CT)
    (tmp_path / "organs.nii.gz").symlink_to(SAMPLE_ORGANS)
    (tmp_path / "model").symlink_to(DEMO_MODEL)
    return tmp_path


def write(folder: Path, *rows: str, header: str = HEADER) -> Path:
    path = folder / "manifest.csv"
    path.write_text(header + "\n" + "\n".join(rows) + "\n")
    return path


def good_row(case_id: str = "case1", units: str = "organs;hybrid", values: str = "softdice;dice;tp") -> str:
    return f'{case_id},ct.nii.gz,model,spleen,"-7,236.3,139.3",ras,,organs.nii.gz,{units},{values},,64,3'


def test_rows_cross_units_and_values_with_paths_relative_to_the_manifest(folder):
    tasks = read_manifest(write(folder, good_row("a"), good_row("b", "fcc", "fp")), folder / "out")
    assert [t.task_id for t in tasks] == ["a__organs", "a__hybrid", "b__fcc"]     # one per case x units
    assert [t.values for t in tasks] == [["softdice", "dice", "tp"]] * 2 + [["fp"]]
    first = tasks[0].request
    assert first.value == "softdice,dice,tp" and tasks[2].request.value == "fp"
    assert first.ct == folder / "ct.nii.gz" and first.organs == folder / "organs.nii.gz"
    assert first.out == folder / "out" / "explanations" / "a__organs"
    assert first.roi_point == (-7.0, 236.3, 139.3) and first.budget == 64 and first.seed == 3
    assert first.score_region == "box" and first.batch_size == 1          # empty cell -> explain's default


def test_extra_columns_name_explain_options_and_tasks_round_trip_through_json(folder):
    header = HEADER + ",fcc-scale-mm,tta,fold,batch_size,checkpoint"
    row = good_row(units="fcc", values="dice") + ",45,yes,0;1,8,checkpoint_best.pth"
    (task,) = read_manifest(write(folder, row, header=header), folder / "out")
    assert (task.request.fcc_scale_mm, task.request.tta, task.request.fold, task.request.batch_size,
            task.request.checkpoint) == (45.0, True, ["0", "1"], 8, "checkpoint_best.pth")
    assert CohortTask.from_json(task.to_json()) == task


@pytest.mark.parametrize("row, header, message", [
    (good_row() + ",1", HEADER + ",colour", "unknown columns colour"),
    (good_row() + ",cuda", HEADER + ",device", "set by the cohort"),
    (good_row().replace("case1", "a__b"), HEADER, "case_id 'a__b'"),
    (good_row().replace("ct.nii.gz", "missing.nii.gz"), HEADER, "ct 'missing.nii.gz' not found"),
    (good_row().replace(",64,", ",many,"), HEADER, "budget 'many' is not a whole number"),
    (good_row(units="organs;voxels"), HEADER, "units: unknown voxels"),
    (good_row(values="softdice;softdice"), HEADER, "names an entry twice"),
    (good_row().replace('"-7,236.3,139.3"', '"1,2"'), HEADER, "roi_point '1,2': give three"),
    (good_row().replace('"-7,236.3,139.3"', ""), HEADER, "give roi_point or roi_mask"),
    (good_row(values="fp").replace(",,64,", ",component,64,"), HEADER, "identically 0"),
    (good_row(), HEADER.replace(",values", ""), "missing columns values"),
    (good_row().replace('"-7,236.3,139.3"', "-7,236.3,139.3"), HEADER, "quote a roi_point that holds commas"),
])
def test_bad_manifests_are_refused_with_the_line_and_the_reason(folder, row, header, message):
    with pytest.raises(InputError, match="manifest") as error:
        read_manifest(write(folder, row, header=header), folder / "out")
    assert message in str(error.value)


def test_a_manifest_that_is_not_utf8_is_refused_with_the_byte(folder):
    path = folder / "manifest.csv"
    path.write_bytes((HEADER + "\n" + good_row("patient_M\u00fcller") + "\n").encode("latin-1"))
    with pytest.raises(InputError, match="is not UTF-8 text \\(byte 0xfc at offset") as error:
        read_manifest(path, folder / "out")
    assert "save it as UTF-8" in str(error.value)


def test_every_problem_is_reported_at_once(folder):
    rows = (good_row("a").replace(",64,", ",x,"), good_row("a"), good_row("c", units="cells"))
    with pytest.raises(InputError) as error:
        read_manifest(write(folder, *rows), folder / "out")
    text = str(error.value)
    assert "line 2 (a): budget 'x'" in text and "line 3: case_id 'a' repeats line 2" in text and \
        "line 4 (c): units: unknown cells" in text


def test_parts_partition_the_study(folder):
    tasks = read_manifest(write(folder, good_row("a"), good_row("b"), good_row("c")), folder / "out")
    parts = [select_part(tasks, k, 3) for k in range(3)]
    assert sorted(t.task_id for part in parts for t in part) == sorted(t.task_id for t in tasks)
    assert all(parts) and len({len(p) for p in parts}) == 1                 # 6 tasks -> 2, 2, 2
    with pytest.raises(InputError, match="part-id"):
        select_part(tasks, 3, 3)


def test_worker_slots():
    assert worker_slots(None, 0, [], 8) == [{"device": "cpu", "gpu": None, "threads": 8}]
    assert [s["threads"] for s in worker_slots(3, 0, [], 8)] == [2, 2, 2]
    assert [s["gpu"] for s in worker_slots(None, 0.5, ["0", "1"], 8)] == ["0", "0", "1", "1"]
    assert [s["gpu"] for s in worker_slots(3, 1, ["4", "5", "6", "7"], 8)] == ["4", "5", "6"]
    with pytest.raises(InputError, match="no CUDA device"):
        worker_slots(None, 1, [], 8)
    with pytest.raises(InputError, match="one GPU"):
        worker_slots(None, 2, ["0", "1"], 8)
    with pytest.raises(InputError, match="fraction 1/n"):
        worker_slots(None, 0.4, ["0"], 8)


@pytest.mark.parametrize("argv, message", [
    (["cohort", "status", "{tmp}/nowhere"], "not a cohort study folder"),
    (["cohort", "gather", "{tmp}"], "not a cohort study folder"),
    (["cohort", "run", "{tmp}/none.csv", "--out", "{tmp}/o"], "manifest {tmp}/none.csv not found"),
    (["cohort", "run", "{manifest}", "--out", "{tmp}/o", "--ray-address", "auto"], "need --executor ray"),
    (["cohort", "run", "{manifest}", "--out", "{tmp}/o", "--cpus-per-task", "4"], "need --executor ray"),
    (["cohort", "run", "{manifest}", "--out", "{tmp}/o", "--executor", "ray", "--workers", "2"],
     "--workers is for --executor local"),
    (["cohort", "run", "{manifest}", "--out", "{tmp}/o", "--max-retries", "-1"], "--max-retries -1"),
    (["cohort", "run", "{manifest}", "--out", "{tmp}/o", "--part-id", "2", "--num-parts", "2"], "part-id"),
])
def test_cohort_commands_refuse_bad_input_in_one_line(folder, capsys, argv, message):
    manifest = write(folder, good_row())
    fill = {"tmp": str(folder), "manifest": str(manifest)}
    assert main([a.format(**fill) for a in argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message.format(**fill) in err
    assert not (folder / "o").exists()                              # nothing written


def test_dry_run_lists_this_part_and_writes_nothing(folder, capsys):
    manifest = write(folder, good_row("a"), good_row("b"))
    assert main(["cohort", "run", str(manifest), "--out", str(folder / "o"), "--dry-run", "--part-id", "1",
                 "--num-parts", "2"]) == 0
    out = capsys.readouterr().out
    assert "2 explanations (part 1 of 2): 2 to run, 0 done, 0 refused" in out
    assert "a__hybrid" in out and "b__hybrid" in out and "a__organs" not in out
    assert not (folder / "o").exists()


def test_ray_executor_without_ray_says_how_to_install_it(folder, capsys, monkeypatch):
    """Ray is installed in the test venv, so its absence is simulated: an import of a None module entry raises
    ImportError exactly as a missing package does."""
    monkeypatch.setitem(sys.modules, "ray", None)
    manifest = write(folder, good_row())
    assert main(["cohort", "run", str(manifest), "--out", str(folder / "o"), "--executor", "ray"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "pip install -e '.[ray]'" in err and "--executor local" in err
    assert not (folder / "o").exists()
