"""Fetching dataset files from public mirrors into a cache, verified by SHA-256.

Each downloadable dataset is a :class:`RemoteDataset`: mirror base URLs tried in order and the
files, each a :class:`RemoteFile` with its published SHA-256. ``REMOTE_DATASETS`` is the registry;
tests (and anyone with a private mirror) build their own ``RemoteDataset`` and pass it in.

A download streams into ``<name>.part`` beside the final file, is hashed on the way, and is moved
onto ``<name>`` with ``os.replace`` only when the hash matches, so a partial or corrupt download is
never taken for a complete one. A ``.part`` left by a crash is overwritten, never read. A cached
file whose hash matches is used without touching the network.

The checksums are the ones TensorFlow Datasets publishes for these exact files
(``tensorflow_datasets/url_checksums/mnist.txt`` and ``fashion_mnist.txt``: URL, size, SHA-256),
the same values torchvision-ruby, Quilt and others pin.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import socket
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..errors import DownloadError

CHUNK_BYTES = 1 << 16  # read/write granularity while streaming
TIMEOUT_SECONDS = 30.0  # per socket operation, not per file

# (file name, bytes so far, total bytes or None when the server does not say)
ProgressCallback = Callable[[str, int, "int | None"], None]


class ChecksumError(DownloadError):
    """Downloaded bytes do not have the published SHA-256."""


class OfflineError(DownloadError, ConnectionError):
    """No mirror could be reached at all (no route, refused, DNS failure, timeout)."""


@dataclass(frozen=True)
class RemoteFile:
    """One file of a dataset: its name on every mirror and its SHA-256 (lower-case hex)."""

    name: str  # e.g. "train-images-idx3-ubyte.gz"
    sha256: str
    size: int | None = None  # bytes, as published; informative only, the hash decides


@dataclass(frozen=True)
class RemoteDataset:
    """Where a dataset's files live: base URLs (tried in order) and the files with their hashes."""

    name: str  # also the cache subdirectory: files of different datasets share names
    mirrors: tuple[str, ...]  # base URLs; a file's URL is mirror.rstrip("/") + "/" + file.name
    files: tuple[RemoteFile, ...]

    def file(self, name: str) -> RemoteFile:
        for remote in self.files:
            if remote.name == name:
                return remote
        raise KeyError(f"{self.name} has no file {name!r}; it has {[f.name for f in self.files]}")


REMOTE_DATASETS: dict[str, RemoteDataset] = {
    "mnist": RemoteDataset(
        name="mnist",
        mirrors=(
            "https://ossci-datasets.s3.amazonaws.com/mnist/",  # torchvision's mirror
            "https://storage.googleapis.com/cvdf-datasets/mnist/",  # CVDF, used by TensorFlow
        ),
        files=(
            RemoteFile(
                "train-images-idx3-ubyte.gz",
                "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
                9_912_422,
            ),
            RemoteFile(
                "train-labels-idx1-ubyte.gz",
                "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
                28_881,
            ),
            RemoteFile(
                "t10k-images-idx3-ubyte.gz",
                "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
                1_648_877,
            ),
            RemoteFile(
                "t10k-labels-idx1-ubyte.gz",
                "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
                4_542,
            ),
        ),
    ),
    "fashion-mnist": RemoteDataset(
        name="fashion-mnist",
        mirrors=(
            "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",  # Zalando's bucket
            "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
        ),
        files=(
            RemoteFile(
                "train-images-idx3-ubyte.gz",
                "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
                26_421_880,
            ),
            RemoteFile(
                "train-labels-idx1-ubyte.gz",
                "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
                29_515,
            ),
            RemoteFile(
                "t10k-images-idx3-ubyte.gz",
                "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
                4_422_102,
            ),
            RemoteFile(
                "t10k-labels-idx1-ubyte.gz",
                "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
                5_148,
            ),
        ),
    ),
}


def default_cache_dir() -> Path:
    """The cache root: ``$CONVPROP_DATA`` if set, else the platform's user cache dir for convprop."""
    env = os.environ.get("CONVPROP_DATA")
    if env:
        return Path(env).expanduser()
    import platformdirs  # only needed when downloading

    return Path(platformdirs.user_cache_dir("convprop"))


def sha256_of(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def download_files(
    spec: RemoteDataset,
    cache_dir: str | os.PathLike | None = None,
    *,
    download: bool = True,
    timeout: float = TIMEOUT_SECONDS,
    progress: ProgressCallback | None = None,
) -> dict[str, Path]:
    """Make sure every file of ``spec`` is in ``<cache_dir>/<spec.name>/`` with the right hash.

    Args:
        spec: the dataset's mirrors and files (e.g. ``REMOTE_DATASETS["mnist"]``).
        cache_dir: the cache root; ``None`` means :func:`default_cache_dir`.
        download: if False, only verified cached files are used and nothing is fetched.
        timeout: seconds per socket operation.
        progress: optional callback ``(file name, bytes so far, total or None)`` while downloading.

    Returns:
        ``{file name: path}`` of the verified files.

    Raises:
        ChecksumError: a mirror served bytes with the wrong hash (and no later mirror served the
            right ones); nothing is left behind.
        OfflineError: no mirror could be reached; the message says where to put the files by hand.
        DownloadError: every mirror answered but none had the file (e.g. HTTP 404).
        FileNotFoundError: ``download=False`` and a file is missing from the cache or damaged.
    """
    directory = Path(cache_dir if cache_dir is not None else default_cache_dir()) / spec.name
    return {
        remote.name: fetch_file(spec, remote, directory, download=download, timeout=timeout, progress=progress)
        for remote in spec.files
    }


def fetch_file(
    spec: RemoteDataset,
    remote: RemoteFile,
    directory: Path,
    *,
    download: bool = True,
    timeout: float = TIMEOUT_SECONDS,
    progress: ProgressCallback | None = None,
) -> Path:
    """``directory / remote.name``, downloaded from the first mirror that serves the right bytes."""
    target = directory / remote.name
    if target.is_file():
        actual = sha256_of(target)
        if actual == remote.sha256:
            return target
        if not download:
            raise FileNotFoundError(
                f"cached {target} is damaged (sha256 {actual}, expected {remote.sha256}) and download=False"
            )
        target.unlink()  # a stale or damaged cache entry: fetch it again
    if not download:
        raise FileNotFoundError(
            f"{remote.name} is not in the cache {directory} and download=False: copy the files "
            f"({', '.join(f.name for f in spec.files)}) there or pass --data-dir"
        )
    if not spec.mirrors:
        raise DownloadError(f"could not download {remote.name}: dataset {spec.name!r} lists no mirrors")
    directory.mkdir(parents=True, exist_ok=True)
    # a private partial file per download: two processes filling one cache never share (and truncate) it
    fd, part_name = tempfile.mkstemp(dir=directory, prefix=f".{remote.name}.", suffix=".part")
    os.close(fd)
    part = Path(part_name)
    failures: list[str] = []  # "url: reason" for mirrors that answered without the file or were unreachable
    mismatches: list[str] = []  # "url: expected ..., got ..." for mirrors that served other bytes
    unreachable = 0
    try:
        for mirror in spec.mirrors:
            url = mirror.rstrip("/") + "/" + remote.name
            try:
                actual = _stream(url, part, timeout=timeout, progress=progress, name=remote.name)
            except urllib.error.HTTPError as exc:  # the server answered: it just does not have the file
                failures.append(f"{url}: HTTP {exc.code} {exc.reason}")
            except http.client.HTTPException as exc:  # answered, then broke off (e.g. IncompleteRead)
                failures.append(f"{url}: {type(exc).__name__}: {exc}")
            except (urllib.error.URLError, OSError) as exc:  # refused, DNS, reset, timeout, ...
                unreachable += 1
                failures.append(f"{url}: {_reason(exc)}")
            else:
                if actual == remote.sha256:
                    os.replace(part, target)  # atomic: another process's identical file may be replaced, harmlessly
                    return target
                mismatches.append(f"{url}: expected sha256 {remote.sha256}, got {actual}")
            part.unlink(missing_ok=True)
    finally:
        part.unlink(missing_ok=True)  # whatever happened (even Ctrl-C), no half file stays behind
    if mismatches:
        others = f" (other mirrors: {'; '.join(failures)})" if failures else ""
        raise ChecksumError(
            f"checksum mismatch for {remote.name}, the download was deleted: {'; '.join(mismatches)}{others}"
        )
    hint = (
        f"copy the {len(spec.files)} files ({', '.join(f.name for f in spec.files)}) into {directory} "
        f"or pass --data-dir"
    )
    if unreachable == len(spec.mirrors):
        raise OfflineError(
            f"could not download {remote.name} from any mirror ({'; '.join(failures)}); "
            f"you are probably offline: {hint}"
        )
    raise DownloadError(f"could not download {remote.name} from any mirror ({'; '.join(failures)}): {hint}")


def _stream(url: str, part: Path, *, timeout: float, progress: ProgressCallback | None, name: str) -> str:
    """Stream ``url`` into ``part`` (truncating it) and return the hex SHA-256 of what was written."""
    digest = hashlib.sha256()
    request = urllib.request.Request(url, headers={"User-Agent": "convprop"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        length = response.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
        try:
            out = open(part, "wb")  # noqa: SIM115  (closed by the `with out:` below, after the error is mapped)
        except OSError as exc:  # a local problem, not the mirror's: do not try the next one
            raise DownloadError(f"cannot write {part}: {exc}") from exc
        with out:
            done = 0
            while chunk := response.read(CHUNK_BYTES):
                digest.update(chunk)
                try:
                    out.write(chunk)
                except OSError as exc:  # e.g. disk full
                    raise DownloadError(f"cannot write {part}: {exc}") from exc
                done += len(chunk)
                if progress is not None:
                    progress(name, done, total)
    return digest.hexdigest()


def _reason(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None)
    if isinstance(reason, (socket.timeout, TimeoutError)) or isinstance(exc, (socket.timeout, TimeoutError)):
        return "timed out"
    return str(reason if reason is not None else exc) or type(exc).__name__
