"""`segshap explain --dry-run`: the counted patch forwards of every cache mode equal what real runs compute, the
JSON contract on stdout (a child process reads it), nothing written to --out, bad input one line and exit 2.

The counts are checked against real runs of the demo model on the cropped false-positive case
(conftest.CROPPED_CASES["liver_fp"], the demo's false-positive "spleen" component in the liver, cropped to two
sliding-window patches) with organ units, one run per cache mode. ``count_forwards`` is also checked against a
direct count of the engine's memo keys on random plans (fast tier).
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import CROPPED_CASES, DEMO_MODEL
from SegSHAPLib import options
from SegSHAPLib.cli.main import main
from SegSHAPLib.explain.request import ExplainRequest
from SegSHAPLib.explain.run import run_explain
from SegSHAPLib.inference.forward_count import count_forwards

CONTRACT_KEYS = ("n_units", "coalitions", "patches_in_support", "patches_full_grid", "folds", "patch_forwards",
                 "memo_peak_bytes", "seconds_estimate")


def _direct_count(keep: np.ndarray, patch_units: list[np.ndarray], mode: str) -> int:
    """The engine's rule spelled out coalition by coalition: a (patch, removed-in-patch) key is computed once in
    mode memo, only the nothing-removed key is kept in mode baseline, nothing in mode none."""
    seen, forwards = set(), 0
    for row in keep:
        for p, units in enumerate(patch_units):
            key = (p, tuple(units[~row[units - 1]]))
            kept = mode == "memo" or (mode == "baseline" and not key[1])
            if not kept or key not in seen:
                forwards += 1
                if kept:
                    seen.add(key)
    return forwards


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_count_forwards_equals_the_key_by_key_count(seed):
    rng = np.random.default_rng(seed)
    m = 12
    keep = np.concatenate([np.ones((1, m), dtype=bool), rng.random((300, m)) < rng.random()])
    patch_units = [np.sort(rng.choice(np.arange(1, m + 1), size=k, replace=False)) for k in (0, 1, 3, 5, 12)]
    crop_bytes = [10, 20, 30, 40, 50]
    count = count_forwards(keep, patch_units, crop_bytes, folds=2, memo_bound_bytes=100)
    for mode in options.CACHE_MODES:
        assert count.forwards[mode] == 2 * _direct_count(keep, patch_units, mode), mode
    assert count.lookups == 2 * len(keep) * len(patch_units) == count.forwards["none"]
    assert count.forwards["memo"] <= count.forwards["baseline"] <= count.forwards["none"]
    distinct = [len({tuple(units[~row[units - 1]]) for row in keep}) for units in patch_units]
    assert count.memo_peak_bytes == 2 * sum(d * b for d, b in zip(distinct, crop_bytes))
    assert count.memo_pinned_bytes == 2 * sum(crop_bytes)              # the full coalition is row 0
    assert count.evicts == (count.memo_peak_bytes - count.memo_pinned_bytes > 100)
    assert count.distinct_ceiling == 2 * sum(min(2 ** len(u), len(keep)) for u in patch_units)


def _request(cases, out, cache: str) -> ExplainRequest:
    _, point, space = CROPPED_CASES["liver_fp"]
    return ExplainRequest(model=DEMO_MODEL, out=out, ct=cases / "liver_fp_ct.nii.gz", target="spleen",
                          roi_point=tuple(float(v) for v in point.split()), point_space=space, units="organs",
                          organs=cases / "liver_fp_organs.nii.gz", value="softdice", budget=40, batch_size=8,
                          cache=cache)


def _argv(request: ExplainRequest, *extra: str) -> list[str]:
    return ["explain", *request.command_line(), *extra]


@pytest.mark.slow
def test_dry_run_predicts_every_cache_mode_of_real_runs(cropped_cases, tmp_path):
    preview_out = tmp_path / "never_written"
    argv = _argv(_request(cropped_cases, preview_out, "memo"), "--dry-run", "--patch-seconds", "0.25")
    child = subprocess.run([sys.executable, "-m", "SegSHAPLib.cli.main", *argv], capture_output=True, text=True)
    assert child.returncode == 0, child.stderr
    preview = json.loads(child.stdout)                  # one JSON object is all of stdout
    assert set(CONTRACT_KEYS) <= set(preview) and set(preview["patch_forwards"]) == set(options.CACHE_MODES)
    assert any(line.startswith("segshap explain --dry-run: ") for line in child.stderr.splitlines())
    assert not preview_out.exists()
    assert preview["seconds_estimate"] == pytest.approx(preview["patch_forwards"]["memo"] * 0.25)
    assert preview["seconds_source"] == "given"
    forwards = preview["patch_forwards"]
    assert forwards["memo"] < forwards["baseline"] < forwards["none"]           # the case tells the modes apart

    for mode in options.CACHE_MODES:
        summary = run_explain(_request(cropped_cases, tmp_path / mode, mode)).summary
        inference = summary["inference"]
        assert inference["patch_forwards"] == forwards[mode], mode
        assert inference["hit_rate"] == pytest.approx(preview["hit_rate"][mode], abs=1e-6), mode
        assert summary["solver"]["coalitions"] == preview["coalitions"]
        assert len(summary["units"]) == preview["n_units"]
        for key in ("patches_in_support", "patches_full_grid", "folds", "naive_patch_forwards"):
            assert inference[key] == preview[key], key

    finished = _argv(_request(cropped_cases, tmp_path / "memo", "memo"), "--dry-run", "--patch-seconds", "0.25")
    resumed = subprocess.run([sys.executable, "-m", "SegSHAPLib.cli.main", *finished], capture_output=True, text=True)
    again = json.loads(resumed.stdout)                  # a finished folder: only the baseline is left
    assert again["journaled"] == again["coalitions"]
    assert again["patch_forwards"]["memo"] == again["patches_in_support"] * again["folds"]


@pytest.mark.parametrize("extra, message", [
    (["--dry-run", "--patch-seconds", "-1"], "--patch-seconds must be a positive number"),
    (["--patch-seconds", "0.2"], "--patch-seconds is for --dry-run"),
])
def test_bad_dry_run_arguments_give_one_line(cropped_cases, tmp_path, capsys, extra, message):
    code = main(_argv(_request(cropped_cases, tmp_path / "out", "memo"), *extra))
    captured = capsys.readouterr()
    lines = [line for line in captured.err.strip().splitlines() if not line.startswith("perform_everything")]
    assert code == 2 and len(lines) == 1 and message in lines[0], captured.err
    assert captured.out == "" and not (tmp_path / "out").exists()
