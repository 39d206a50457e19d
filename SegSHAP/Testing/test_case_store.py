"""The on-disk case cache (inference.case_store): entries checked on every read, LRU eviction under the byte
budget, the folder setting; and, with real `segshap explain` processes on a cropped case, that a new process on
the same CT runs no full-volume prediction and gives identical phi, and that a damaged entry is recomputed."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import cropped_explain_args
from SegSHAPLib.inference.case_store import CACHE_DIR_ENV, CaseStore, cache_folder, open_store


def arrays(seed: int, n: int = 1000) -> dict:
    rng = np.random.default_rng(seed)
    return {"data": rng.normal(size=(1, n)).astype(np.float32), "properties": np.array('{"spacing": [1, 2, 3]}')}


def test_an_entry_reads_back_and_a_damaged_one_is_deleted_not_trusted(tmp_path):
    store = CaseStore(tmp_path, budget_bytes=10 ** 9)
    store.save("k", arrays(0))
    loaded = store.load("k")
    np.testing.assert_array_equal(loaded["data"], arrays(0)["data"])
    assert str(loaded["properties"]) == '{"spacing": [1, 2, 3]}'

    path = store.path("k")
    raw = bytearray(path.read_bytes())
    member = raw.find(arrays(0)["data"].tobytes()[:64])       # a byte inside the stored array (npz is uncompressed)
    raw[member + 10] ^= 0xFF
    path.write_bytes(bytes(raw))
    assert store.load("k") is None and not path.exists()

    store.save("k", arrays(0))
    path.write_bytes(path.read_bytes()[:200])                  # truncated (a crash mid-copy, a full disk)
    assert store.load("k") is None and not path.exists()
    assert store.load("never written") is None


def test_the_least_recently_used_entries_go_first_when_over_the_budget(tmp_path):
    one = len(np.zeros(1000, np.float32).tobytes())
    store = CaseStore(tmp_path, budget_bytes=int(2.5 * (one + 1000)))          # room for two entries
    for index, key in enumerate(("a", "b")):
        store.save(key, arrays(index))
        os.utime(store.path(key), (1000 + index, 1000 + index))             # a older than b
    assert store.load("a") is not None                                      # a read makes a the most recent
    store.save("c", arrays(2))
    assert sorted(p.stem for p in store.folder.glob("*.npz")) == ["a", "c"]
    CaseStore(tmp_path, budget_bytes=10).save("huge", arrays(3))            # larger than the whole budget
    assert not CaseStore(tmp_path).path("huge").exists()


def test_the_folder_setting(tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_DIR_ENV, str(tmp_path / "env"))
    assert cache_folder(None) == tmp_path / "env" and cache_folder(tmp_path / "flag") == tmp_path / "flag"
    assert open_store("none") is None and open_store("NONE") is None
    monkeypatch.setenv(CACHE_DIR_ENV, "none")
    assert cache_folder(None) is None
    monkeypatch.delenv(CACHE_DIR_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_folder(None) == tmp_path / "xdg" / "segshap"


@pytest.mark.slow
def test_a_new_process_on_the_same_ct_runs_no_full_prediction_and_gives_the_same_phi(cropped_cases, tmp_path):
    environment = dict(os.environ, **{CACHE_DIR_ENV: str(tmp_path / "cache")})

    def explain(name: str) -> dict:
        out = tmp_path / name
        done = subprocess.run([sys.executable, "-m", "SegSHAPLib.cli.main", "explain",
                               *cropped_explain_args(cropped_cases, "liver_fp", out)],
                              capture_output=True, text=True, timeout=600, env=environment)
        assert done.returncode == 0, done.stderr
        summary = json.loads((out / "summary.json").read_text())
        return {"full": summary["inference"]["full_predictions"], "from": summary["inference"]["case_cache"],
                "phi": [u["shap"] for u in summary["units"]]}

    first, second = explain("first"), explain("second")
    assert (first["full"], first["from"]) == (1, "computed")
    assert (second["full"], second["from"]) == (0, "disk")
    assert second["phi"] == first["phi"]

    [entry] = (tmp_path / "cache" / "cases").glob("*.npz")
    raw = bytearray(entry.read_bytes())
    raw[len(raw) // 2] ^= 0xFF                                              # one flipped byte in the entry
    entry.write_bytes(bytes(raw))
    third = explain("third")
    assert (third["full"], third["from"]) == (1, "computed")                # detected and recomputed
    assert third["phi"] == first["phi"]
