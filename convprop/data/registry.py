"""The downloadable datasets: mirrors, and each file's name, published size and SHA-256.

``REMOTE_DATASETS`` is the registry convprop downloads from; a :class:`RemoteDataset` built by hand
(a private mirror, a test server) can be passed to :func:`convprop.data.download_files` instead. The
values are validated when built, so a typo (a mirror given as one string, a hash of the wrong length)
is an ``ArgumentError`` at once, not a confusing download failure later.

The checksums and sizes are the ones TensorFlow Datasets publishes for these exact files
(``tensorflow_datasets/url_checksums/mnist.txt`` and ``fashion_mnist.txt``: URL, size, SHA-256).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import ArgumentError, ArgumentTypeError

UNKNOWN_SIZE_CAP = 1 << 30  # bytes accepted for a RemoteFile published without a size
_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class RemoteFile:
    """One file of a dataset: its name on every mirror, its SHA-256 (lower-case hex) and its size in bytes."""

    name: str  # e.g. "train-images-idx3-ubyte.gz"
    sha256: str
    size: int | None = None  # bytes, as published: the most a mirror may send (UNKNOWN_SIZE_CAP when None)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name or "/" in self.name or self.name in (".", ".."):
            raise ArgumentError(f"RemoteFile name must be a plain file name, got {self.name!r}")
        if not isinstance(self.sha256, str) or not _SHA256.fullmatch(self.sha256):
            raise ArgumentError(f"RemoteFile {self.name}: sha256 must be 64 lower-case hex digits, got {self.sha256!r}")
        if self.size is not None and (isinstance(self.size, bool) or not isinstance(self.size, int) or self.size < 1):
            raise ArgumentError(
                f"RemoteFile {self.name}: size must be a positive int of bytes or None, got {self.size!r}"
            )

    @property
    def cap(self) -> int:
        """The largest body accepted for this file, in bytes."""
        return self.size if self.size is not None else UNKNOWN_SIZE_CAP


@dataclass(frozen=True)
class RemoteDataset:
    """Where a dataset's files live: mirror base URLs and the files with their hashes and sizes."""

    name: str  # also the cache subdirectory: files of different datasets share names
    mirrors: tuple[str, ...]  # base URLs; a file's URL is mirror.rstrip("/") + "/" + file.name
    files: tuple[RemoteFile, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name or "/" in self.name or self.name in (".", ".."):
            raise ArgumentError(f"RemoteDataset name must be a plain folder name, got {self.name!r}")
        if isinstance(self.mirrors, str) or not isinstance(self.mirrors, Sequence):
            raise ArgumentTypeError(f"RemoteDataset {self.name}: mirrors must be a tuple of URLs, got {self.mirrors!r}")
        for mirror in self.mirrors:
            if not isinstance(mirror, str) or not mirror.startswith(("https://", "http://")):
                raise ArgumentError(f"RemoteDataset {self.name}: a mirror must be an http(s):// URL, got {mirror!r}")
        if isinstance(self.files, RemoteFile) or not all(isinstance(f, RemoteFile) for f in self.files):
            raise ArgumentTypeError(
                f"RemoteDataset {self.name}: files must be a tuple of RemoteFile, got {self.files!r}"
            )

    def file(self, name: str) -> RemoteFile:
        for remote in self.files:
            if remote.name == name:
                return remote
        raise KeyError(f"{self.name} has no file {name!r}; it has {[f.name for f in self.files]}")

    def ordered_mirrors(self) -> tuple[str, ...]:
        """The mirrors in the order they are tried: HTTPS ones first, otherwise as listed."""
        return tuple(sorted(self.mirrors, key=lambda url: not url.startswith("https://")))


def _files(table: str) -> tuple[RemoteFile, ...]:
    """Rows of ``name  published size in bytes  SHA-256`` → RemoteFiles."""
    rows = (line.split() for line in table.strip().splitlines())
    return tuple(RemoteFile(name, sha256, int(size)) for name, size, sha256 in rows)


REMOTE_DATASETS: dict[str, RemoteDataset] = {
    "mnist": RemoteDataset(
        name="mnist",
        mirrors=(
            "https://ossci-datasets.s3.amazonaws.com/mnist/",  # torchvision's mirror
            "https://storage.googleapis.com/cvdf-datasets/mnist/",  # CVDF, used by TensorFlow
        ),
        files=_files(
            """
            train-images-idx3-ubyte.gz  9_912_422  440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609
            train-labels-idx1-ubyte.gz     28_881  3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c
            t10k-images-idx3-ubyte.gz   1_648_877  8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6
            t10k-labels-idx1-ubyte.gz       4_542  f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6
            """
        ),
    ),
    "fashion-mnist": RemoteDataset(
        name="fashion-mnist",
        mirrors=(
            "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
            "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",  # Zalando's bucket (HTTP only)
        ),
        files=_files(
            """
            train-images-idx3-ubyte.gz  26_421_880  3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84
            train-labels-idx1-ubyte.gz      29_515  a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845
            t10k-images-idx3-ubyte.gz    4_422_102  346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073
            t10k-labels-idx1-ubyte.gz        5_148  67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5
            """
        ),
    ),
}
