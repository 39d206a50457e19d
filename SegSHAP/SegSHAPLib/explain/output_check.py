"""Is an explain output folder whole and of one piece? The check every reader runs before trusting one.

``segshap explain`` writes ``summary.json`` last and records in it (key ``output_sha256``) the SHA-256 of each
image it belongs to; ``segshap evaluate`` records in ``faithfulness.json`` (key ``attribution_sha256``) the
digest of the attribution its curves rank. ``check_output_folder`` recomputes those digests, so an image cut
short or replaced, a summary left over from an earlier run or faithfulness curves of an earlier ranking are
refused with one line naming the file, instead of being read as if they belonged together. Folders written
before the digests existed (no ``output_sha256``) are accepted as they are.
"""

from __future__ import annotations

import json
from pathlib import Path

from SegSHAPLib.errors import InputError
from SegSHAPLib.io.atomic_files import sha256_of

SUMMARY_FILE = "summary.json"
FAITHFULNESS_FILE = "faithfulness.json"
CURVES_FILE = "curves.png"
DIGESTS_KEY = "output_sha256"
ATTRIBUTION_DIGEST_KEY = "attribution_sha256"
ATTRIBUTION_FILE = "attribution.nii.gz"
SUMMARY_KEYS = ("version", "inputs", "roi", "units", "solver")
RERUN_HINT = "rerun segshap explain with the same arguments to rewrite it (the journal makes that quick)"


def _read_json(path: Path, what: str) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise InputError(f"{path} is damaged (not complete JSON); {what}") from None
    if not isinstance(data, dict):
        raise InputError(f"{path} is not a segshap {path.stem} (not a JSON object); {what}")
    return data


def read_summary(folder: str | Path) -> dict:
    """summary.json of an explain output folder as a dict; InputError when it is missing, damaged or not a
    segshap explain summary (the message says which)."""
    folder = Path(folder)
    path = folder / SUMMARY_FILE
    if not path.is_file():
        raise InputError(f"{folder} has no {SUMMARY_FILE}; give the --out folder of a finished segshap explain")
    summary = _read_json(path, RERUN_HINT)
    missing = [key for key in SUMMARY_KEYS if key not in summary]
    if missing:
        raise InputError(f"{path} is not a segshap explain summary (no {', '.join(missing)}); give the --out folder "
                         "of a finished segshap explain")
    return summary


def check_output_folder(folder: str | Path, faithfulness: bool = True) -> dict:
    """Verify an explain output folder and return its summary.json as a dict.

    Raises InputError naming the first file that disagrees: summary.json missing, damaged or foreign; an image
    it names (``output_sha256``) missing or with another SHA-256; with ``faithfulness``, a faithfulness.json
    that is damaged or ranks another attribution than this folder's."""
    folder = Path(folder)
    summary = read_summary(folder)
    digests = summary.get(DIGESTS_KEY) or {}
    for name, digest in digests.items():
        path = folder / name
        if not path.is_file():
            raise InputError(f"{path} is missing but {folder / SUMMARY_FILE} names it; {RERUN_HINT}")
        if sha256_of(path) != digest:
            raise InputError(f"{path} does not match {folder / SUMMARY_FILE} (another SHA-256): the folder was "
                             f"damaged or partly overwritten; {RERUN_HINT}")
    curves = folder / FAITHFULNESS_FILE
    if faithfulness and curves.is_file():
        recorded = _read_json(curves, f"rerun segshap evaluate {folder}").get(ATTRIBUTION_DIGEST_KEY)
        if recorded is not None and digests.get(ATTRIBUTION_FILE) not in (None, recorded):
            raise InputError(f"{curves} belongs to an earlier attribution than {folder / ATTRIBUTION_FILE}; rerun "
                             f"segshap evaluate {folder}")
    return summary
