"""Atomic file writes: a crash or a bad input never leaves a half-written file where a good one was.

A write goes to a temporary file next to its target, named ``.<name>.<pid>-<16 hex>.tmp`` (unique: two
writers never share one), which is renamed over the target once complete. The temporary file is
removed in a ``finally`` if anything fails; if the process is killed before that (SIGKILL, power
loss), the next write to the same target removes the leftovers whose writing process is gone.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import re
import secrets
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ArgumentError

__all__ = [
    "check_suffix",
    "json_safe",
    "stale_temporaries",
    "write_atomic",
    "write_json_atomic",
    "write_text_atomic",
]

# A temporary file of the version before the pid was in the name: stale once this old (no writer is that slow).
_LEGACY_STALE_SECONDS = 3600.0


def _temporary_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(8)}.tmp")


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True  # maybe another thread of ours, writing right now
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    except OSError:  # e.g. Windows, where os.kill(pid, 0) is not a probe: treat as alive, fall back on age
        return True
    return True


def stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Temporary files of earlier writes to ``path`` whose writer is gone (killed before it could clean up).

    Only names of our own pattern count: ``.<name>.<pid>-<16 hex>.tmp`` whose process no longer exists,
    and the older ``.<name>.<16 hex>.tmp`` once over an hour old. Nothing else is ever touched.
    """
    path = Path(path)
    pattern = re.compile(rf"^\.{re.escape(path.name)}\.(?:(\d+)-)?[0-9a-f]{{16}}\.tmp$")
    stale = []
    try:
        entries = list(path.parent.iterdir())
    except OSError:
        return []
    for entry in entries:
        match = pattern.match(entry.name)
        if match is None or not entry.is_file() or entry.is_symlink():
            continue
        if match.group(1) is not None:
            if not _process_alive(int(match.group(1))):
                stale.append(entry)
        else:
            try:
                if time.time() - entry.stat().st_mtime > _LEGACY_STALE_SECONDS:
                    stale.append(entry)
            except OSError:
                continue
    return stale


def _remove_stale(entries: Iterable[Path]) -> None:
    for entry in entries:
        with contextlib.suppress(OSError):  # gone already (another writer cleaned it), or not removable: leave it
            entry.unlink()


def _renamed(exc: OSError, message: str) -> OSError:
    """The same kind of OSError (FileNotFoundError, PermissionError, ...) and errno, with ``message``."""
    renamed = type(exc)(message)
    renamed.errno = exc.errno
    return renamed


def write_atomic(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` so that a crash leaves either the old file or the new one, never half.

    The bytes go to a temporary file in the same directory, are flushed to disk, and the temporary
    file is then renamed over ``path`` (``os.replace`` is atomic on POSIX and Windows). The temporary
    file never outlives the call unless the process is killed; stale ones from killed writes to the
    same ``path`` are removed first (see :func:`stale_temporaries`). Errors name ``path``, never the
    temporary file.
    """
    path = Path(path)
    _remove_stale(stale_temporaries(path))
    tmp = _temporary_name(path)
    try:
        # O_EXCL: a fresh file of our own; mode 0o666 minus the umask, as open() gives (mkstemp would give 0600)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    except OSError as exc:
        folder = str(path.parent)
        reason = "the folder does not exist" if exc.errno == errno.ENOENT else exc.strerror
        raise _renamed(exc, f"cannot write {str(path)!r}: {reason} (folder {folder!r})") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.replace(tmp, path)
        except OSError as exc:  # e.g. path is a directory: say so about path, not about our temporary name
            raise _renamed(exc, f"cannot write {str(path)!r}: {exc.strerror}") from None
    finally:
        tmp.unlink(missing_ok=True)  # renamed away on success: nothing to remove then
    return path


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """:func:`write_atomic` of ``text`` encoded as UTF-8."""
    return write_atomic(path, text.encode("utf-8"))


def check_suffix(path: str | os.PathLike, suffixes: Iterable[str], what: str) -> Path:
    """``path`` as a Path if its extension is one of ``suffixes`` (case-insensitive), else ArgumentError.

    Called before anything is computed or written, so an output name the writer cannot produce
    (``plot.jpg`` from a PNG writer, ``metrics.txt`` for JSON) is refused instead of getting bytes
    of another format under that name.
    """
    path = Path(path)
    allowed = tuple(s.lower() for s in suffixes)
    if path.suffix.lower() not in allowed:
        got = f"{path.suffix!r}" if path.suffix else "no extension"
        raise ArgumentError(
            f"cannot write {what} to {str(path)!r}: it has {got}, expected {' or '.join(map(repr, allowed))}"
        )
    return path


def json_safe(value: Any) -> Any:
    """``value`` with every NaN or infinite float replaced by None, so it can be written as strict JSON.

    ``json.dumps`` writes NaN and Infinity as bare ``NaN``/``Infinity`` tokens, which are not JSON
    (browsers and most parsers refuse them). Mappings, lists and tuples are copied; NumPy scalars and
    arrays become Python numbers and lists first.
    """
    if isinstance(value, np.ndarray):
        value = value.tolist()
    elif isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {key: json_safe(v) for key, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def write_json_atomic(path: str | os.PathLike, value: Any, *, indent: int | None = 2) -> Path:
    """:func:`write_text_atomic` of ``value`` as strict JSON (NaN and ±inf written as ``null``), plus a newline."""
    return write_text_atomic(path, json.dumps(json_safe(value), indent=indent, allow_nan=False) + "\n")
