"""The download cache's own safety: damaged files set aside, never deleted; dead downloads' leftovers removed.

Nothing here deletes a file convprop did not write: a cached file whose SHA-256 does not match is
renamed ``<name>.corrupt`` (then ``.corrupt-2``, ..., keeping earlier ones), and only convprop's own
partial-download folders (and convprop 0.1's ``.part`` files) are ever removed, once stale.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

from ..errors import DownloadError

STALE_PARTIAL_SECONDS = 3600.0  # a partial-download folder untouched this long belongs to a dead process
PARTIAL_PREFIX = ".convprop-partial-"  # the private working folder of one download


def remove_stale_partials(directory: Path, *, older_than: float = STALE_PARTIAL_SECONDS) -> list[Path]:
    """Remove what killed downloads left in ``directory``; return what was removed.

    Only convprop's own leftovers are touched: ``.convprop-partial-*`` folders holding nothing but
    regular files (pooch's temporary files), and convprop 0.1's ``.<name>.<random>.part`` files, and only
    once nothing in them changed for ``older_than`` seconds (a live download writes every chunk, and
    gives up after ``TIMEOUT_SECONDS`` without one). Everything else is left alone.
    """
    removed: list[Path] = []
    now = time.time()
    for entry in directory.iterdir():
        try:
            if entry.name.startswith(PARTIAL_PREFIX) and entry.is_dir() and not entry.is_symlink():
                inside = list(entry.iterdir())
                if any(not p.is_file() or p.is_symlink() for p in inside):
                    continue  # not what a download leaves: not ours to judge
                if max((p.stat().st_mtime for p in [entry, *inside]), default=now) > now - older_than:
                    continue  # maybe a download still running in another process
                for p in inside:
                    p.unlink()
                entry.rmdir()
                removed.append(entry)
            elif (
                re.fullmatch(r"\..+\.[^.]+\.part", entry.name)
                and entry.is_file()
                and not entry.is_symlink()
                and entry.stat().st_mtime <= now - older_than
            ):
                entry.unlink()
                removed.append(entry)
        except OSError:  # raced with another process, or not ours to remove: leave it
            continue
    return removed


def set_aside(target: Path) -> Path:
    """Rename a damaged ``target`` to ``<name>.corrupt`` (or ``.corrupt-2``, ...), never over an earlier one."""
    for n in range(1, 10_000):
        aside = target.with_name(f"{target.name}.corrupt" + (f"-{n}" if n > 1 else ""))
        if not aside.exists():
            try:
                os.rename(target, aside)
            except OSError as exc:
                raise DownloadError(
                    f"{target} does not have its published SHA-256 and cannot be set aside as {aside.name} "
                    f"({exc.strerror or exc}): move it away by hand"
                ) from None
            return aside
    raise DownloadError(f"{target} is damaged and {target.name}.corrupt-1..9999 all exist: clean up the folder")
