"""Fault injection: damaged inputs, failing and interrupted output writes, a poisoned journal, SIGTERM.

Each fault ends in a correct result or in one clear line and a non-zero exit, never a traceback or a wrong
exit 0, and no journaled coalition is lost. Everything is real: files really truncated, a real file-size limit
(``ulimit -f`` in a subprocess, as a quota behaves), real SIGKILL/SIGTERM of real `segshap` processes on a
cropped CT (conftest.CROPPED_CASES, budget 16).
"""

from __future__ import annotations

import gzip
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import nibabel
import numpy as np
import pytest
import SimpleITK as sitk

from conftest import CROPPED_CASES, DEMO_MODEL, write_dicom_series
from SegSHAPLib.cli.main import main
from SegSHAPLib.errors import InputError
from SegSHAPLib.explain.faithfulness import evaluate_output
from SegSHAPLib.explain.journal import (JOURNAL_FILE, REJECTED_FILE, SPEC_FILE, CoalitionJournal, journal_line,
                                        journaled_coalitions, read_spec, spec_digest)
from SegSHAPLib.explain.output_check import check_output_folder
from SegSHAPLib.explain.run import ExplainRequest, run_explain
from SegSHAPLib.inference.model import one_line
from SegSHAPLib.io.image_io import ImageReadError, Volume, read_volume, write_volume

BUDGET = 16
SPLEEN_CROP, SPLEEN_POINT, SPLEEN_SPACE = CROPPED_CASES["spleen"]


def explain_argv(cases: Path, out: Path, budget: int = BUDGET, **changes) -> list[str]:
    """`segshap explain` arguments for the cropped spleen case (organ units); ``changes`` override flags
    (None drops one)."""
    options = {"--ct": cases / "spleen_ct.nii.gz", "--organs": cases / "spleen_organs.nii.gz",
               "--model": DEMO_MODEL, "--target": "spleen", "--roi-point": SPLEEN_POINT,
               "--point-space": SPLEEN_SPACE, "--units": "organs", "--value": "softdice", "--budget": budget,
               "--out": out}
    options.update(changes)
    argv = ["explain"]
    for flag, value in options.items():
        if value is not None:
            argv += [flag, str(value)]
    return argv


def explain_request(cases: Path, out: Path, budget: int = BUDGET) -> ExplainRequest:
    return ExplainRequest(model=DEMO_MODEL, out=out, ct=cases / "spleen_ct.nii.gz", target="spleen",
                          roi_point=tuple(float(v) for v in SPLEEN_POINT.split(",")), point_space=SPLEEN_SPACE,
                          units="organs", organs=cases / "spleen_organs.nii.gz", value="softdice", budget=budget)


def run_cli(capsys, argv) -> tuple[int, list[str]]:
    """Exit code and the stderr lines of an in-process `segshap` run (nnU-Net's device notice dropped)."""
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err.strip().splitlines()
    return code, [line for line in err if line.strip() and not line.startswith("perform_everything_on_device")]


def segshap_process(argv, *, limit_kb: int | None = None) -> subprocess.Popen:
    """A real `segshap` process (its own session); with ``limit_kb`` under `ulimit -f` (a file-size limit)."""
    command = [sys.executable, "-m", "SegSHAPLib.cli.main", *map(str, argv)]
    if limit_kb is not None:
        command = ["bash", "-c", f'ulimit -f {limit_kb} && exec "$@"', "bash", *command]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, encoding="utf-8",
                            errors="replace", start_new_session=True)


def error_lines(stderr: str) -> list[str]:
    """The lines of a `segshap` stderr that are not progress bars or nnU-Net's notices."""
    return [line for line in stderr.replace("\r", "\n").splitlines()
            if line.startswith("segshap ") and not line.startswith("segshap: ")]


def phi_of(folder: Path) -> np.ndarray:
    return np.array([u["shap"] for u in json.loads((folder / "summary.json").read_text())["units"]])


def temporaries(folder: Path) -> list[Path]:
    return sorted(folder.glob(".*.tmp*"))


def copy_journal(source: Path, target: Path) -> None:
    """A new output folder holding ``source``'s journal spec and journal only (what a run had computed)."""
    target.mkdir()
    for name in (SPEC_FILE, JOURNAL_FILE):
        shutil.copy(source / name, target / name)


@pytest.fixture(scope="module")
def reference(cropped_cases, tmp_path_factory) -> Path:
    """An uninterrupted explanation of the cropped spleen case (the phi every faulty run must end with)."""
    out = tmp_path_factory.mktemp("reference") / "out"
    run_explain(explain_request(cropped_cases, out))
    return out


# ------------------------------------------------------------------------------------------------ inputs
def test_truncated_or_corrupt_images_are_refused(cropped_cases, tmp_path, capsys):
    ct = cropped_cases / "spleen_ct.nii.gz"
    data = ct.read_bytes()
    cut = tmp_path / "cut.nii.gz"
    cut.write_bytes(data[:int(len(data) * 0.9)])
    assert sitk.ReadImage(str(cut)).GetSize() == (64, 48, 16)       # ITK alone reads it, the rest zero-filled
    flipped = tmp_path / "flipped.nii.gz"
    middle = len(data) // 2
    flipped.write_bytes(data[:middle] + bytes(b ^ 0xFF for b in data[middle:middle + 64]) + data[middle + 64:])
    raw = tmp_path / "raw.nii"
    raw.write_bytes(gzip.decompress(data)[:-1000])
    for path, message in ((cut, "truncated or corrupt"), (flipped, "truncated or corrupt"), (raw, "truncated")):
        with pytest.raises(ImageReadError, match=message):
            read_volume(path)
    code, err = run_cli(capsys, explain_argv(cropped_cases, tmp_path / "out", **{"--ct": cut}))
    assert code == 2 and len(err) == 1 and "cut.nii.gz: cannot be read" in err[0], err
    assert not (tmp_path / "out").exists()


def test_dicom_series_with_a_missing_or_duplicated_slice_is_refused_naming_the_slices(tmp_path):
    volume = Volume(np.arange(6 * 4 * 5, dtype=np.int16).reshape(6, 4, 5), (0.8, 0.8, 3.0), (1.0, 2.0, 3.0),
                    np.eye(3))
    for name, slices, message in (("gap", [0, 1, 2, 4, 5], "6.00 mm between slice002.dcm and slice003.dcm where "
                                                          "the other slices are 3.00 mm apart"),
                                  ("duplicate", [0, 1, 2, 2, 3, 4, 5], "two slices at the same position "
                                                                      "(slice002.dcm and slice003.dcm")):
        folder = tmp_path / name
        folder.mkdir()
        write_dicom_series(volume, folder, slices)
        with pytest.raises(ImageReadError) as error:
            read_volume(folder)
        assert message in str(error.value)
    whole = tmp_path / "whole"
    whole.mkdir()
    write_dicom_series(volume, whole)
    assert np.allclose(read_volume(whole).spacing, (0.8, 0.8, 3.0))


@pytest.fixture(scope="module")
def bad_inputs(cropped_cases, tmp_path_factory) -> Path:
    """Masks and label maps on the cropped CT's grid that must be refused, a uint8 CT, a tiny CT and a model
    folder whose dataset.json renames the checkpoint's labels."""
    folder = tmp_path_factory.mktemp("bad_inputs")
    ct = read_volume(cropped_cases / "spleen_ct.nii.gz")
    two = np.zeros(ct.shape_zyx, dtype=np.uint8)
    two[4:8, 10:20, 10:20], two[4:8, 30:40, 30:40] = 1, 2
    write_volume(ct.with_array(two), folder / "two_labels.nii.gz")
    probability = (two == 1).astype(np.float32)
    probability[-1, -1, -1] = 1e-9
    write_volume(ct.with_array(probability), folder / "probability.nii.gz")
    organs = read_volume(cropped_cases / "spleen_organs.nii.gz")
    write_volume(organs.with_array(organs.array.astype(np.float32) + 0.5), folder / "organs_interpolated.nii.gz")
    write_volume(ct.with_array(np.clip(ct.array, 0, 255).astype(np.uint8)), folder / "ct_uint8.nii.gz")
    tiny = nibabel.load(str(cropped_cases / "spleen_ct.nii.gz")).slicer[20:24, 20:24, 4:8]
    nibabel.save(tiny, str(folder / "ct_tiny.nii.gz"))
    model = folder / "renamed_model"
    model.mkdir()
    (model / "fold_0").symlink_to(DEMO_MODEL / "fold_0")
    shutil.copy(DEMO_MODEL / "plans.json", model / "plans.json")
    dataset = json.loads((DEMO_MODEL / "dataset.json").read_text())
    dataset["labels"] = {"background": 0, "liver": 1}
    (model / "dataset.json").write_text(json.dumps(dataset))
    return folder


@pytest.mark.parametrize("changes, message", [
    ({"--roi-point": None, "--roi-mask": "{bad}/two_labels.nii.gz"}, "the ROI mask is not binary: it holds the "
                                                                      "labels 1, 2 besides 0"),
    ({"--roi-point": None, "--roi-mask": "{bad}/probability.nii.gz"}, "non-integer voxel value(s), e.g. 1e-09"),
    ({"--prediction": "{cases}/spleen_organs.nii.gz"}, "--prediction has label(s) 3, 5, 6"),
    ({"--organs": "{bad}/organs_interpolated.nii.gz"}, "the organ map (--organs) has"),
    ({"--ct": "{bad}/ct_uint8.nii.gz"}, "the CT is stored as uint8"),
    ({"--ct": "{bad}/ct_tiny.nii.gz", "--roi-point": "1,1,1", "--point-space": "ijk", "--units": "fcc",
      "--organs": None},
     "the model predicts no voxel of class 1 in this CT (4 x 4 x 4 voxels"),
    ({"--model": "{bad}/renamed_model"}, "disagrees with the dataset description embedded in fold_0"),
    ({"--seed": "-1", "--model": "{bad}/no_model"}, "--seed must be a whole number >= 0"),
    ({"--scene": "{bad}/no_folder/scene.mrb", "--model": "{bad}/no_model"}, "--scene"),
])
def test_bad_inputs_and_flags_are_one_line_before_anything_is_written(cropped_cases, bad_inputs, tmp_path, capsys,
                                                                      changes, message):
    """--seed and --scene are refused before the model (here a folder that does not exist) is even looked at."""
    changes = {flag: None if value is None else value.format(bad=bad_inputs, cases=cropped_cases)
               for flag, value in changes.items()}
    code, err = run_cli(capsys, explain_argv(cropped_cases, tmp_path / "out", **changes))
    assert code == 2 and len(err) == 1 and message in err[0], err
    assert not (tmp_path / "out").exists()


def test_a_state_dict_mismatch_is_reported_whole_on_one_line():
    import torch

    with pytest.raises(RuntimeError) as error:
        torch.nn.Linear(3, 2).load_state_dict(torch.nn.Linear(4, 2).state_dict())
    assert "\n" in str(error.value)
    text = one_line(error.value)
    assert "\n" not in text and "size mismatch for weight" in text


# ----------------------------------------------------------------------------------------------- outputs
@pytest.mark.slow
def test_a_file_size_limit_ends_in_one_line_and_the_rerun_finishes_from_the_journal(cropped_cases, reference,
                                                                                      tmp_path):
    """Under `ulimit -f 4` (4 KiB: the journal of every value function fits, about 2.4 KiB; attribution.nii.gz,
    about 5.3 KiB, does not) explain stops at the first image with exit 1 and one line; no partial image or
    summary is left; the rerun computes nothing again."""
    out = tmp_path / "out"
    process = segshap_process(explain_argv(cropped_cases, out), limit_kb=4)
    _, stderr = process.communicate(timeout=600)
    lines = error_lines(stderr)
    assert process.returncode == 1 and "Traceback" not in stderr, stderr
    assert len(lines) == 1 and "cannot write" in lines[0] and "attribution.nii.gz" in lines[0], stderr
    assert journaled_coalitions(out) == BUDGET
    assert not (out / "summary.json").exists() and not (out / "attribution.nii.gz").exists()
    assert not temporaries(out)
    result = run_explain(explain_request(cropped_cases, out))
    assert result.summary["solver"]["resumed_coalitions"] == BUDGET
    np.testing.assert_array_equal(result.phi, phi_of(reference))
    check_output_folder(out)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders, so the fault cannot arise")
def test_a_read_only_folder_mid_run_ends_in_one_line_and_keeps_the_journal(cropped_cases, reference, tmp_path,
                                                                            capsys):
    out = tmp_path / "out"
    copy_journal(reference, out)
    out.chmod(0o500)
    try:
        code, err = run_cli(capsys, explain_argv(cropped_cases, out))
    finally:
        out.chmod(0o700)
    assert code == 1 and len(err) == 1 and "cannot write" in err[0], err
    assert journaled_coalitions(out) == BUDGET


@pytest.mark.slow
def test_kills_during_the_output_write_never_leave_a_folder_whose_parts_disagree(cropped_cases, reference,
                                                                                  tmp_path):
    """SIGKILL at random points of the output write (the journal is complete, so each run goes straight to
    writing): afterwards the folder either has no summary.json (unfinished) or one whose images match it; the
    final rerun's phi equals the uninterrupted run's."""
    out = tmp_path / "out"
    copy_journal(reference, out)
    rng = random.Random(0)
    kills = 0
    for _ in range(3):
        had_summary = (out / "summary.json").exists()
        process = segshap_process(explain_argv(cropped_cases, out))
        while process.poll() is None:
            writing = temporaries(out) or (had_summary and not (out / "summary.json").exists())
            if writing:
                time.sleep(rng.uniform(0, 0.1))
                process.kill()
                kills += 1
                break
            time.sleep(0.001)
        _, stderr = process.communicate(timeout=600)
        assert process.returncode in (0, -signal.SIGKILL), stderr
        if (out / "summary.json").exists():
            check_output_folder(out)
            np.testing.assert_array_equal(phi_of(out), phi_of(reference))
        else:
            with pytest.raises(InputError, match="has no summary.json"):
                check_output_folder(out)
    assert kills >= 1, "no run was caught writing"
    result = run_explain(explain_request(cropped_cases, out))
    np.testing.assert_array_equal(result.phi, phi_of(reference))
    check_output_folder(out)
    assert not temporaries(out)


def test_stale_faithfulness_is_removed_and_a_folder_whose_parts_disagree_is_refused(cropped_cases, reference,
                                                                                    tmp_path, capsys):
    out = tmp_path / "out"
    copy_journal(reference, out)
    run_explain(explain_request(cropped_cases, out, budget=8))
    evaluate_output(out, steps=2)
    assert (out / "faithfulness.json").exists() and (out / "curves.png").exists()
    run_explain(explain_request(cropped_cases, out))                          # budget 16: another phi
    assert not (out / "faithfulness.json").exists() and not (out / "curves.png").exists()
    evaluate_output(out, steps=2)
    run_explain(explain_request(cropped_cases, out))                          # the same phi: the curves stay
    assert check_output_folder(out) and (out / "faithfulness.json").exists()

    for name, damage, message in (
            ("units.nii.gz", lambda p: p.write_bytes(p.read_bytes()[:-100]), "units.nii.gz does not match"),
            ("attribution.nii.gz", lambda p: p.unlink(), "attribution.nii.gz is missing"),
            ("summary.json", lambda p: p.write_text(p.read_text()[:200]), "summary.json is damaged"),
            ("summary.json", lambda p: p.write_text('{"values": [1, 2]}'), "is not a segshap explain summary")):
        damaged = tmp_path / f"damaged_{name}_{message.split()[-1]}"
        shutil.copytree(out, damaged)
        damage(damaged / name)
        code, err = run_cli(capsys, ["evaluate", damaged, "--steps", "2"])
        assert code == 2 and len(err) == 1 and message in err[0], err
    faithfulness = json.loads((out / "faithfulness.json").read_text())
    faithfulness["attribution_sha256"] = "0" * 64
    (out / "faithfulness.json").write_text(json.dumps(faithfulness))
    with pytest.raises(InputError, match="belongs to an earlier attribution"):
        check_output_folder(out)


# ----------------------------------------------------------------------------------------------- journal
def test_a_poisoned_journal_is_skipped_counted_and_quarantined_never_trusted(cropped_cases, reference, tmp_path):
    out = tmp_path / "out"
    copy_journal(reference, out)
    digest = spec_digest(read_spec(out))
    journal = out / JOURNAL_FILE
    first_key = journal.read_text().split("\t", 1)[0]
    poison = [journal_line(first_key, {"softdice": 0.5}, digest),                  # conflicts with the first line
              journal_line("ffff00", {"softdice": 0.25}, "0123456789abcdef"),      # another request's line
              journal_line("aaaa00", {"softdice": float("nan")}, digest),          # a NaN value
              journal_line("bbbb00", {"softdice": 0.125}, digest).replace("0.125", "0.126")]  # checksum no longer matches
    with open(journal, "a") as handle:
        handle.write("".join(poison))
    result = run_explain(explain_request(cropped_cases, out))
    np.testing.assert_array_equal(result.phi, phi_of(reference))
    assert result.summary["solver"]["journal_skipped_lines"] == {"damaged": 1, "foreign": 1, "non_finite": 1,
                                                                 "conflicting": 2}
    assert result.summary["solver"]["resumed_coalitions"] == BUDGET - 1       # the conflicting key is recomputed
    assert len((out / REJECTED_FILE).read_text().splitlines()) == 5
    again = run_explain(explain_request(cropped_cases, out))
    assert set(again.summary["solver"]["journal_skipped_lines"].values()) == {0}
    assert again.summary["solver"]["resumed_coalitions"] == BUDGET


def test_a_journal_written_before_checksums_still_resumes(cropped_cases, reference, tmp_path):
    out = tmp_path / "out"
    copy_journal(reference, out)
    journal = out / JOURNAL_FILE
    journal.write_text("".join("\t".join(line.split("\t")[:2]) + "\n" for line in journal.read_text().splitlines()))
    result = run_explain(explain_request(cropped_cases, out))
    assert result.summary["solver"]["resumed_coalitions"] == BUDGET
    np.testing.assert_array_equal(result.phi, phi_of(reference))


def test_a_second_process_on_the_same_folder_refuses_at_once(cropped_cases, reference, tmp_path, capsys):
    out = tmp_path / "out"
    copy_journal(reference, out)
    with CoalitionJournal(out, len(phi_of(reference)), ["softdice"]):                   # holds the folder's lock
        code, err = run_cli(capsys, explain_argv(cropped_cases, out))
    assert code == 2 and len(err) == 1 and "is in use by another segshap process" in err[0], err
    assert journaled_coalitions(out) == BUDGET


# ----------------------------------------------------------------------------------------------- signals
def wait_for_lines(path: Path, lines: int, process: subprocess.Popen, timeout_s: float = 600) -> int:
    """Wait until the journal at ``path`` holds ``lines`` lines (0 when the process ended first)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and process.poll() is None:
        found = journaled_coalitions(path.parent) if path.exists() else 0
        if found >= lines:
            return found
        time.sleep(0.02)
    return 0


def test_sigterm_is_handled_like_ctrl_c_and_the_rerun_resumes(cropped_cases, tmp_path):
    out = tmp_path / "out"
    process = segshap_process(explain_argv(cropped_cases, out, budget=24))
    journaled = wait_for_lines(out / JOURNAL_FILE, 8, process)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=300)
    assert journaled and process.returncode == 143, stderr
    assert "Traceback" not in stderr and error_lines(stderr) == [
        "segshap explain: terminated (SIGTERM); everything computed so far is kept - rerun the same command to "
        "resume"], stderr
    kept = journaled_coalitions(out)
    assert kept >= journaled
    result = run_explain(explain_request(cropped_cases, out, budget=24))
    assert result.summary["solver"]["resumed_coalitions"] == kept


def alive_after(pid: int, seconds: float) -> bool:
    """Whether process ``pid`` still exists after waiting up to ``seconds`` for it to go."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        time.sleep(0.1)
    return True


@pytest.mark.slow
def test_sigterm_stops_a_cohort_run_and_its_worker(cropped_cases, tmp_path):
    """SIGTERM to the coordinator alone (not its process group): exit 143, the worker stops too (no orphan
    computing on, no BrokenPipe traceback in its log). 512 coalitions with cache none keep the run long enough
    to be signalled on an idle machine (64 with the memo took about a second)."""
    manifest = tmp_path / "study.csv"
    manifest.write_text("case_id,ct,model,target,roi_point,point_space,organs,units,values,budget,cache\n"
                        f'spleen,{cropped_cases / "spleen_ct.nii.gz"},{DEMO_MODEL},spleen,"{SPLEEN_POINT}",'
                        f'{SPLEEN_SPACE},{cropped_cases / "spleen_organs.nii.gz"},organs,softdice,512,none\n')
    out = tmp_path / "study"
    task = "spleen__organs"
    process = segshap_process(["cohort", "run", manifest, "--out", out])
    journaled = wait_for_lines(out / "explanations" / task / JOURNAL_FILE, 8, process)
    worker = json.loads((out / "status" / f"{task}.json").read_text())["pid"]
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=300)
    assert journaled and process.returncode == 143, stderr
    assert "Traceback" not in stderr and "rerun the same command to resume" in stderr, stderr
    assert not alive_after(worker, 10.0), f"worker {worker} still runs"
    log = (out / "logs" / f"{task}.log").read_text()
    assert "Traceback" not in log and "BrokenPipe" not in log, log
    assert json.loads((out / "status" / f"{task}.json").read_text())["state"] == "interrupted"
