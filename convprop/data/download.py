"""Fetching dataset files from public mirrors into a cache, verified by SHA-256, with pooch.

Each downloadable dataset is a :class:`RemoteDataset`: mirror base URLs and the files, each a
:class:`RemoteFile` with its published SHA-256 and size (:mod:`convprop.data.registry`).
``REMOTE_DATASETS`` is the registry; tests (and anyone with a private mirror) build their own
``RemoteDataset`` and pass it in.

`pooch <https://www.fatiando.org/pooch/>`_ (the download-and-cache library SciPy and scikit-image use)
does the transfer: its registry of SHA-256 hashes, retries, a private temporary file per attempt and
the move into place once the hash matches, and the progress bar (tqdm). convprop adds what a user of
``convprop train --dataset mnist`` relies on:

- **several mirrors**, HTTPS ones first, each tried in turn until one serves the published bytes;
- **a size cap**: a body larger than the published size is refused (from ``Content-Length`` before a
  byte is read, else as soon as it is exceeded), so a hostile or broken mirror cannot fill the disk;
- **nothing is deleted that convprop did not write**: a cached file whose SHA-256 does not match is set
  aside as ``<name>.corrupt`` (then ``.corrupt-2``, ... keeping earlier ones) before the network is
  tried, and the message says which file and why;
- **private partial files**: each download works in its own ``.convprop-partial-*`` folder beside the
  cache, removed when it ends however it ends; one left by a killed process is removed by the next
  download once it is older than ``STALE_PARTIAL_SECONDS`` (a live download writes far more often), and
  is never read (:mod:`convprop.data.cache`);
- **an offline message** that says what is missing, where to put it, and names ``--data-dir``.

One attempt at one mirror (what pooch's downloader writes into: the size cap, the running SHA-256, the
progress) is :mod:`convprop.data.transfer`.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path

from ..errors import ArgumentError, ArgumentTypeError, DownloadError
from .cache import PARTIAL_PREFIX, STALE_PARTIAL_SECONDS, remove_stale_partials, set_aside
from .registry import REMOTE_DATASETS, UNKNOWN_SIZE_CAP, RemoteDataset, RemoteFile
from .transfer import CHUNK_BYTES as CHUNK_BYTES  # re-exported (`name as name`): defined here before transfer.py
from .transfer import _LocalWriteError, _pooch, _quiet_pooch_about_partials, _reason, _TooLarge, _Transfer

__all__ = [  # the registry and the cache helpers are re-exported: convprop 0.1 imported them from here
    "PARTIAL_PREFIX",
    "REMOTE_DATASETS",
    "STALE_PARTIAL_SECONDS",
    "UNKNOWN_SIZE_CAP",
    "ChecksumError",
    "DownloadError",
    "NotCachedError",
    "OfflineError",
    "ProgressCallback",
    "RemoteDataset",
    "RemoteFile",
    "default_cache_dir",
    "download_files",
    "fetch_file",
    "remove_stale_partials",
    "set_aside",
    "sha256_of",
]

TIMEOUT_SECONDS = 30.0  # per socket operation (connect, each read), not per file
RETRIES = 1  # further attempts per mirror after a failed one (pooch waits 1 s, 2 s, ... between them)

# (file name, bytes so far, total bytes or None when the server does not say)
ProgressCallback = Callable[[str, int, "int | None"], None]


class ChecksumError(DownloadError):
    """Downloaded bytes do not have the published SHA-256."""


class OfflineError(DownloadError, ConnectionError):
    """No mirror could be reached at all (no route, refused, DNS failure, timeout)."""


class NotCachedError(DownloadError, FileNotFoundError):
    """``download=False`` and a file is missing from the cache or does not have its published SHA-256."""


def default_cache_dir() -> Path:
    """The cache root: ``$CONVPROP_DATA`` if set, else the platform's user cache dir for convprop."""
    env = os.environ.get("CONVPROP_DATA")
    if env:
        return Path(env).expanduser()
    return Path(_pooch().os_cache("convprop"))  # platformdirs.user_cache_dir("convprop")


def sha256_of(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    return str(_pooch().file_hash(os.fspath(path), alg="sha256"))


def download_files(
    spec: RemoteDataset,
    cache_dir: str | os.PathLike[str] | None = None,
    *,
    download: bool = True,
    timeout: float = TIMEOUT_SECONDS,
    retries: int = RETRIES,
    progress: ProgressCallback | bool = True,
) -> dict[str, Path]:
    """Make sure every file of ``spec`` is in ``<cache_dir>/<spec.name>/`` with the right hash.

    Args:
        spec: the dataset's mirrors and files (e.g. ``REMOTE_DATASETS["mnist"]``).
        cache_dir: the cache root; ``None`` means :func:`default_cache_dir`.
        download: if False, only verified cached files are used and nothing is fetched.
        timeout: seconds per socket operation.
        retries: further attempts per mirror after a failed one (pooch's ``retry_if_failed``).
        progress: True for a tqdm bar on stderr, False for none, or a callback
            ``(file name, bytes so far, total or None)``.

    Returns:
        ``{file name: path}`` of the verified files.

    Raises:
        ChecksumError: a mirror served bytes with the wrong hash (and no later mirror served the
            right ones); nothing is left behind.
        OfflineError: no mirror could be reached; the message says where to put the files by hand.
        DownloadError: every mirror answered but none had the file (e.g. HTTP 404, a body larger than
            the published size, a transfer broken off), or the cache folder cannot be written.
        NotCachedError: ``download=False`` and a file is missing from the cache or damaged (it is left
            where it is). Also a ``FileNotFoundError``.
    """
    if not isinstance(spec, RemoteDataset):
        raise ArgumentTypeError(f"spec must be a RemoteDataset, got {type(spec).__name__}")
    if cache_dir is not None and not isinstance(cache_dir, (str, os.PathLike)):
        raise ArgumentTypeError(f"cache_dir must be a path or None, got {type(cache_dir).__name__}")
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise ArgumentError(f"retries must be an int >= 0, got {retries!r}")
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
        raise ArgumentError(f"timeout must be a positive number of seconds, got {timeout!r}")
    directory = Path(cache_dir if cache_dir is not None else default_cache_dir()).expanduser() / spec.name
    if download and directory.is_dir():
        remove_stale_partials(directory)
    paths = {}
    for remote in spec.files:
        paths[remote.name] = fetch_file(
            spec, remote, directory, download=download, timeout=timeout, retries=retries, progress=progress
        )
    return paths


def fetch_file(
    spec: RemoteDataset,
    remote: RemoteFile,
    directory: Path,
    *,
    download: bool = True,
    timeout: float = TIMEOUT_SECONDS,
    retries: int = RETRIES,
    progress: ProgressCallback | bool = True,
) -> Path:
    """``directory / remote.name``, downloaded from the first mirror that serves the right bytes."""
    target = directory / remote.name
    aside_note: str | None = None  # what happened to a damaged cached copy, for the messages
    try:  # one stat, not is_file() then exists(): another process may rename its download into place in between
        mode: int | None = target.stat().st_mode
    except OSError:  # not there, or a file where the folder should be: creating the folder will say so
        mode = None
    if mode is not None and stat.S_ISREG(mode):
        actual = sha256_of(target)
        if actual == remote.sha256:
            return target
        if not download:
            raise NotCachedError(
                f"cached {target} does not have the published SHA-256 (expected {remote.sha256}, got {actual}) "
                f"and download=False; it was left as it is: replace it by hand or allow the download"
            )
        aside = set_aside(target)
        aside_note = (
            f"the cached {target} did not have the published SHA-256 (expected {remote.sha256}, got {actual}) "
            f"and was set aside as {aside.name}"
        )
        warnings.warn(f"{aside_note}; downloading it again", stacklevel=3)
    elif mode is not None:
        raise DownloadError(f"{target} exists but is not a regular file: expected {remote.name} or nothing there")
    if not download:
        raise NotCachedError(
            f"{remote.name} is not in the cache {directory} and download=False: copy the files "
            f"({', '.join(f.name for f in spec.files)}) there or pass --data-dir"
        )
    if not spec.mirrors:
        raise DownloadError(f"could not download {remote.name}: dataset {spec.name!r} lists no mirrors")
    try:
        directory.mkdir(parents=True, exist_ok=True)
        partial = Path(tempfile.mkdtemp(prefix=PARTIAL_PREFIX, dir=directory))  # private to this download
    except OSError as exc:
        raise DownloadError(
            f"cannot write into the cache folder {directory}: {exc.strerror or exc}; "
            f"set $CONVPROP_DATA to a writable folder or pass --data-dir"
        ) from None
    try:
        return _from_mirrors(spec, remote, directory, partial, timeout, retries, progress, aside_note)
    finally:
        shutil.rmtree(partial, ignore_errors=True)  # whatever happened (even Ctrl-C), no partial file stays


def _from_mirrors(
    spec: RemoteDataset,
    remote: RemoteFile,
    directory: Path,
    partial: Path,
    timeout: float,
    retries: int,
    progress: ProgressCallback | bool,
    aside_note: str | None,
) -> Path:
    import requests

    pooch = _pooch()
    _quiet_pooch_about_partials()
    failures: list[str] = []  # "url: reason" for mirrors that answered without the file or were unreachable
    mismatches: list[str] = []  # "url: expected ..., got ..." for mirrors that served other bytes
    unreachable = 0
    mirrors = spec.ordered_mirrors()
    for mirror in mirrors:
        base = mirror.rstrip("/") + "/"
        url = base + remote.name
        store = pooch.create(
            path=partial, base_url=base, registry={remote.name: f"sha256:{remote.sha256}"}, retry_if_failed=retries
        )
        transfer = _Transfer(remote, url, progress)
        try:
            fetched = Path(store.fetch(remote.name, downloader=transfer.downloader(timeout)))
        except _LocalWriteError as exc:  # a problem of this machine, not of the mirror: stop here
            raise DownloadError(f"cannot write {remote.name} into {directory}: {exc}") from None
        except _TooLarge as exc:
            failures.append(f"{url}: {exc}")
        except requests.HTTPError as exc:  # the server answered: it just does not have the file
            response = exc.response
            status = f"HTTP {response.status_code} {response.reason}" if response is not None else str(exc)
            failures.append(f"{url}: {status}")
        except (requests.ConnectionError, requests.Timeout) as exc:
            if isinstance(exc, requests.exceptions.SSLError) or transfer.started:  # reached, then failed
                failures.append(f"{url}: {_reason(exc)} after {transfer.done} bytes")
            else:  # refused, DNS, no route, timeout before any byte
                unreachable += 1
                failures.append(f"{url}: {_reason(exc)}")
        except requests.RequestException as exc:  # answered, then broke off (e.g. a short body); or a bad URL
            if transfer.started:
                failures.append(f"{url}: the transfer broke off after {transfer.done} bytes ({type(exc).__name__})")
            else:
                failures.append(f"{url}: {type(exc).__name__}: {exc}")
        except ValueError:  # pooch: the downloaded file's hash is not the registered one
            if transfer.sha256 == remote.sha256:
                raise  # the bytes were right: not a mismatch, so not ours to explain away
            mismatches.append(f"{url}: expected sha256 {remote.sha256}, got {transfer.sha256}")
        except OSError as exc:  # pooch's temporary file or its move (requests' errors are OSErrors, caught above)
            raise DownloadError(f"cannot write {remote.name} into {directory}: {exc.strerror or exc}") from None
        else:
            target = directory / remote.name
            if target.is_file() and sha256_of(target) != remote.sha256:  # appeared meanwhile, and is wrong
                set_aside(target)
            try:
                os.replace(fetched, target)  # atomic: another process's identical file may be replaced, harmlessly
            except OSError as exc:
                raise DownloadError(f"cannot move {remote.name} into {directory}: {exc.strerror or exc}") from None
            return target
        finally:
            transfer.close()
    if aside_note is not None:
        failures.append(aside_note)
    if mismatches:
        others = f" (other mirrors: {'; '.join(failures)})" if failures else ""
        raise ChecksumError(
            f"checksum mismatch for {remote.name}, the download was deleted: {'; '.join(mismatches)}{others}"
        )
    missing = [f.name for f in spec.files if not (directory / f.name).is_file()]
    hint = (
        f"copy {', '.join(missing)} (from another machine or a browser download) into {directory}, "
        f"or pass --data-dir with a folder holding all {len(spec.files)} files"
    )
    if unreachable == len(mirrors):
        raise OfflineError(
            f"could not download {remote.name} from any mirror ({'; '.join(failures)}); "
            f"you are probably offline: {hint}"
        )
    raise DownloadError(f"could not download {remote.name} from any mirror ({'; '.join(failures)}): {hint}")
