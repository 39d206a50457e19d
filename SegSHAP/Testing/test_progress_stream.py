"""`segshap explain --progress json`: the JSON-lines stream, read from a real `segshap explain` process on a
cropped case of the sample CT with the demo model (nothing faked)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import DEMO_MODEL, SAMPLE_CT, cropped_explain_args
from SegSHAPLib.cli.main import build_parser
from SegSHAPLib.explain.progress_stream import END_STATUSES, event_from_record, parse_line
from SegSHAPLib.explain.request import ExplainRequest

PROGRESS_KEYS = {"event", "stage", "done", "total", "forwards", "hits", "hit_rate", "eta_s", "elapsed_s", "message"}


def explain(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "SegSHAPLib.cli.main", "explain", *args],
                          capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_every_stdout_line_is_a_record_per_stage_and_batch_then_the_end(cropped_cases, tmp_path):
    out = tmp_path / "out"
    done = explain(*cropped_explain_args(cropped_cases, "spleen", out, "--progress", "json"))
    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in done.stdout.splitlines()]       # stdout holds JSON lines only
    start, progress, end = records[0], records[1:-1], records[-1]
    assert set(start) == {"event", "pid"} and start["event"] == "start" and start["pid"] > 0
    assert end == {"event": "end", "status": "finished", "out": str(out), "message": end["message"]}
    assert all(set(r) - {"estimate"} == PROGRESS_KEYS and r["event"] == "progress" for r in progress)
    stages = [r["stage"] for r in progress]
    assert stages[0] == "prepare" and stages[-1] == "write" and "coalitions" in stages
    assert stages.index("write") > max(i for i, s in enumerate(stages) if s == "coalitions")
    coalitions = [r for r in progress if r["stage"] == "coalitions"]
    summary = json.loads((out / "summary.json").read_text())
    assert coalitions[-1]["done"] == coalitions[-1]["total"] == summary["solver"]["coalitions"]
    forwards = [r["forwards"] for r in coalitions]
    assert forwards == sorted(forwards) and forwards[-1] == summary["inference"]["patch_forwards"]
    assert coalitions[-1]["hits"] == summary["inference"]["patch_cache_hits"]
    assert coalitions[-1]["eta_s"] == 0.0 and all(r["eta_s"] is None for r in progress if r["stage"] != "coalitions")
    event = event_from_record(coalitions[-1])                                # what the panel's runner rebuilds
    assert (event.stage, event.done, event.counters["patch_forwards"]) == ("coalitions", 8, forwards[-1])
    assert "explained" in done.stderr                                        # the human summary moved to stderr

    # the live estimate: once per solver segment, never repeated on the engine's lines, the last one the answer
    estimates = [r["estimate"] for r in coalitions if "estimate" in r]
    assert estimates and all(r["stage"] == "coalitions" for r in progress if "estimate" in r)
    assert [e["coalitions"] for e in estimates] == sorted({e["coalitions"] for e in estimates})
    last = estimates[-1]
    assert last["units"] == [u["name"] for u in summary["units"]] and list(last["values"]) == summary["value_functions"]
    for name, answer in last["values"].items():
        assert answer["phi"] == pytest.approx([u["shap"] for u in summary["by_value"][name]["units"]], abs=1e-12)
    rebuilt = event_from_record(next(r for r in coalitions if "estimate" in r))
    assert rebuilt.estimate == estimates[0]


@pytest.mark.slow
def test_bad_input_ends_the_stream_with_an_error_line_and_exit_2(cropped_cases, tmp_path):
    done = explain(*cropped_explain_args(cropped_cases, "spleen", tmp_path / "out", "--progress", "json"),
                   "--target", "kidney")
    assert done.returncode == 2
    end = parse_line(done.stdout.splitlines()[-1])
    assert end["event"] == "end" and end["status"] == "error" and end["status"] in END_STATUSES
    assert "not a foreground class" in end["message"]
    assert done.stderr.strip().splitlines()[-1] == f"segshap explain: error: {end['message']}"
    assert "Traceback" not in done.stderr
    assert parse_line("nnU-Net says hello") is None                          # foreign lines are not records


@pytest.mark.parametrize("changes", [{}, {"fold": ["0", "all"], "tta": True, "roi_point": (-7.0, 236.3, 1e-17),
                                     "grouping": "default", "case_cache": "none", "verify": 2}])
def test_a_request_as_command_line_arguments_parses_back_to_itself(tmp_path, changes):
    """What the panel's child process is started with (ExplainRequest.command_line) is the same request."""
    request = ExplainRequest(**{"model": DEMO_MODEL, "out": tmp_path / "out", "ct": SAMPLE_CT, "target": "spleen",
                                "roi_point": (-127.0, 152.3, 142.3), "units": "fcc", "value": "dice", "budget": 12,
                                **changes})
    args = build_parser().parse_args(["explain", *request.command_line()])
    assert ExplainRequest.from_args(args) == request


def test_the_end_line_names_how_the_run_ended_as_the_exit_code_does():
    """SIGTERM, an output not written whole, a cancel, bad input: each its own end status (cli.main's exit codes
    143, 1, 130, 2), so a reader tells a terminated run from a failed one without the exit code."""
    from SegSHAPLib.errors import Cancelled, InputError, OutputError, Terminated
    from SegSHAPLib.explain.progress_stream import END_STATUSES, end_record, ending_of

    endings = {ending_of(error)[0]: error for error in (
        Terminated(), OutputError("cannot write out/units.nii.gz: No space left on device"),
        Cancelled("cancelled; 8 coalitions are journaled"), KeyboardInterrupt(), InputError("--roi-point: bad"),
        RuntimeError("boom"))}
    assert set(endings) == set(END_STATUSES) - {"finished"}
    assert ending_of(OutputError("cannot write x: disk full")) == ("output_error", "cannot write x: disk full")
    assert ending_of(RuntimeError("boom")) == ("error", "RuntimeError: boom")
    status, message = ending_of(Terminated())
    assert end_record(status, "out", message)["status"] == "terminated" and "resume" in message
