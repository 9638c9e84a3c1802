"""One attempt to fetch one file from one mirror, as pooch's downloader protocol sees it.

:class:`_Transfer` is what pooch's ``HTTPDownloader`` writes into and reports progress to: the size cap (a
body larger than the published size is refused, from ``Content-Length`` before a byte is read, else as soon
as it is exceeded), the running SHA-256 and the progress bar or callback. Also here: pooch itself, imported
only when downloading; a short reason for a failed connection; and the filter that keeps pooch from
logging our private partial folders. :mod:`convprop.data.download` tries the mirrors in turn with these.
"""

from __future__ import annotations

import hashlib
import logging
import re
import sys
from collections.abc import Callable
from typing import IO, TYPE_CHECKING, Any

from ..errors import DownloadError
from .cache import PARTIAL_PREFIX
from .registry import RemoteFile

if TYPE_CHECKING:
    from .download import ProgressCallback

CHUNK_BYTES = 1 << 16  # read/write granularity while streaming


def _pooch() -> Any:
    """The pooch module, imported only when downloading (it pulls in requests)."""
    import pooch  # type: ignore[import-untyped]  # pooch ships no py.typed marker

    return pooch


class _TooLarge(DownloadError):
    """A mirror sends more bytes than the file's published size."""


class _LocalWriteError(DownloadError):
    """Writing the partial file failed (disk full, permissions): no other mirror can help."""


class _Transfer:
    """One attempt's destination and progress: what pooch's ``HTTPDownloader`` writes into and reports to.

    It is the file-like ``output_file`` (``write``/``flush``: the size cap and the running SHA-256) and the
    custom progress-bar object of pooch's protocol (``total``, ``update``, ``reset``, ``close``). pooch sets
    ``total`` from ``Content-Length`` before reading the body, so an announced oversize body is refused
    before a byte of it is read.
    """

    def __init__(self, remote: RemoteFile, url: str, progress: ProgressCallback | bool) -> None:
        self.remote, self.url, self.progress = remote, url, progress
        self._total = 0  # from Content-Length; 0 when the server does not say
        self.done = 0
        self.started = False  # the server answered with a body
        self._digest = hashlib.sha256()
        self._out: IO[bytes] | None = None
        self._bar: Any = None

    def downloader(self, timeout: float) -> Callable[[str, str, Any], None]:
        http = _pooch().HTTPDownloader(
            progressbar=self,
            chunk_size=CHUNK_BYTES,
            timeout=timeout,
            headers={"User-Agent": "convprop (pooch)", "Accept-Encoding": "identity"},  # the hash is of the raw bytes
        )

        def download(url: str, output_file: str, store: Any) -> None:
            self._total, self.done, self.started, self._digest = 0, 0, False, hashlib.sha256()  # a new attempt
            if self._bar is not None:
                self._bar.reset()
            try:
                out = open(output_file, "wb")  # noqa: SIM115  (closed in the finally below)
            except OSError as exc:
                raise _LocalWriteError(exc.strerror or str(exc)) from None
            self._out = out
            try:
                http(url, self, store)
            finally:
                self._out = None
                out.close()

        return download

    @property
    def sha256(self) -> str:
        return self._digest.hexdigest()

    @property
    def total(self) -> int:
        return self._total

    @total.setter
    def total(self, value: int) -> None:  # pooch: the response's Content-Length
        self.started = True
        if value > self.remote.cap:
            raise _TooLarge(
                f"announces {value} bytes, more than the published size {self.remote.cap} of {self.remote.name}"
            )
        self._total = value
        if self.progress is True and self._bar is None:
            from tqdm import tqdm

            self._bar = tqdm(
                total=value or None, desc=self.remote.name, unit="B", unit_scale=True, leave=False, file=sys.stderr
            )

    def write(self, chunk: bytes) -> int:
        self.started = True
        if self.done + len(chunk) > self.remote.cap:
            raise _TooLarge(f"sent more than the published size {self.remote.cap} bytes of {self.remote.name}")
        assert self._out is not None  # set by download() around pooch's call
        try:
            self._out.write(chunk)
        except OSError as exc:
            raise _LocalWriteError(exc.strerror or str(exc)) from None
        self._digest.update(chunk)
        self.done += len(chunk)
        if callable(self.progress):
            self.progress(self.remote.name, self.done, self._total or None)
        elif self._bar is not None:
            self._bar.update(len(chunk))
        return len(chunk)

    def flush(self) -> None:
        if self._out is not None:
            self._out.flush()

    def update(self, n: int) -> None:  # pooch's estimate per chunk: bytes are counted in write() instead
        pass

    def reset(self) -> None:  # pooch, at the end: nothing to redo, write() counted exactly
        pass

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def _reason(exc: BaseException) -> str:
    """A short reason for a connection failure (requests' own text is a nested repr)."""
    import requests

    if isinstance(exc, requests.Timeout):
        return "timed out"
    if isinstance(exc, requests.exceptions.SSLError):
        return "TLS error"
    text = str(exc)
    for pattern, reason in (
        (r"Connection refused", "connection refused"),
        (r"Name or service not known|nodename nor servname|getaddrinfo failed|NameResolution|Temporary failure in "
         r"name resolution", "host name not resolved"),
        (r"Network is unreachable|No route to host", "network unreachable"),
        (r"Connection reset", "connection reset"),
        (r"timed out", "timed out"),
    ):  # fmt: skip
        if re.search(pattern, text):
            return reason
    return type(exc).__name__


class _PartialPathFilter(logging.Filter):
    """Drops pooch's INFO lines about our private partial folders (its own other messages still show)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return PARTIAL_PREFIX not in record.getMessage()


def _quiet_pooch_about_partials() -> None:
    logger = _pooch().get_logger()
    if not any(isinstance(f, _PartialPathFilter) for f in logger.filters):
        logger.addFilter(_PartialPathFilter())
