"""Files written whole or not at all: a reader (or a crash) never sees half a file; and their reader.

The text goes to a temporary file in the same folder, is flushed to disk, and replaces the target with
``os.replace`` (atomic on POSIX and Windows within one file system).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; return the path."""
    path = Path(path)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def write_json_atomic(path: str | os.PathLike, data, **dumps_options) -> Path:
    """``data`` as indented JSON (plus a final newline) written atomically; return the path."""
    return write_text_atomic(path, json.dumps(data, indent=2, **dumps_options) + "\n")


def read_json_or_none(path: str | os.PathLike):
    """The JSON content of ``path``, or None when the file is absent or not JSON (e.g. not yet written)."""
    try:
        return json.loads(Path(path).read_text())
    except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError):
        return None
