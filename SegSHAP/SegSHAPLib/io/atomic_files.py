"""Files written whole or not at all: a reader (or a crash) never sees half a file.

The content goes to a temporary file in the same folder, is flushed to disk, and replaces the target with
``os.replace`` (atomic on POSIX and Windows within one file system).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def write_atomic(path: str | os.PathLike, write: Callable[[BinaryIO], object]) -> Path:
    """Call ``write(stream)`` on a temporary binary file next to ``path``, then move it over ``path``; return the
    path. On any error the temporary file is removed and ``path`` is untouched."""
    path = Path(path)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            write(stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; return the path."""
    return write_atomic(path, lambda stream: stream.write(text.encode("utf-8")))


def write_json_atomic(path: str | os.PathLike, data, **dumps_options) -> Path:
    """``data`` as indented JSON (plus a final newline) written atomically; return the path."""
    return write_text_atomic(path, json.dumps(data, indent=2, **dumps_options) + "\n")
