"""Files written whole or not at all: a reader (or a crash) never sees half a file; and their reader.

Every file goes to a temporary name in the same folder (``.<name>.<random>.tmp<suffix>``, the same suffix so that
writers choosing the format by it still work), is flushed to disk, checked (its size; images also their header
and compressed stream, see ``image_io.write_volume``) and only then replaces the target with ``os.replace``
(atomic on POSIX and Windows within one file system). A failure (disk full, quota, read-only folder) removes the
temporary file, leaves the target as it was and raises ``OutputError`` naming the file and the cause.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from SegSHAPLib.errors import OutputError

TEMPORARY_MARK = ".tmp"


def output_error(path: str | os.PathLike, err: BaseException) -> OutputError:
    """An OSError (or a writer's RuntimeError) while writing ``path`` as one line naming the file and cause."""
    reason = err.strerror if isinstance(err, OSError) and err.strerror else \
        (str(err).strip().splitlines() or [type(err).__name__])[-1].strip()
    return OutputError(f"cannot write {path}: {reason} (disk full, over quota or read-only?)")


def _suffix(path: Path) -> str:
    """'.nii.gz' for a.nii.gz, '.json' for summary.json: every suffix, as image writers look at all of them."""
    return "".join(path.suffixes)


@contextmanager
def atomic_target(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path`` for a writer to fill (and check); then fsync it and rename it to
    ``path``. Any exception removes the temporary file; OSError becomes OutputError."""
    path = Path(path)
    temporary = path.parent / f".{path.name}.{secrets.token_hex(6)}{TEMPORARY_MARK}{_suffix(path)}"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        os.close(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))     # the umask applies
    except OSError as err:
        raise output_error(path, err) from None
    try:
        yield temporary
        with open(temporary, "rb+") as stream:
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except OSError as err:
        raise output_error(path, err) from None
    finally:
        temporary.unlink(missing_ok=True)


def stale_temporaries(folder: str | os.PathLike, name: str) -> list[Path]:
    """Temporary files of ``name`` left in ``folder`` by a process killed while writing it."""
    return sorted(Path(folder).glob(f".{name}.*{TEMPORARY_MARK}*"))


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically and check its size on disk; return the path."""
    with atomic_target(path) as temporary:
        with open(temporary, "wb") as stream:
            stream.write(data)
        if temporary.stat().st_size != len(data):
            raise OutputError(f"cannot write {path}: {temporary.stat().st_size} of {len(data)} bytes written "
                              "(disk full or over quota?)")
    return Path(path)


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; return the path."""
    return write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | os.PathLike, data, **dumps_options) -> Path:
    """``data`` as indented JSON (plus a final newline) written atomically; return the path."""
    return write_text_atomic(path, json.dumps(data, indent=2, **dumps_options) + "\n")


def read_json_or_none(path: str | os.PathLike):
    """The JSON content of ``path``, or None when the file is absent or not JSON (e.g. not yet written)."""
    try:
        return json.loads(Path(path).read_text())
    except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError):
        return None
def sha256_of(path: str | os.PathLike) -> str:
    """The SHA-256 of a file's bytes, as hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()
