"""A local HTTP mirror for the download tests: 127.0.0.1 only, a bounded request loop, scripted faults.

``FileServer(files)`` serves ``{name: bytes}`` under ``server.url``; 404 for anything else. Per file,
``faults[name]`` scripts what the next requests get, one entry per request (then normal service):

- ``"cut"``: the full ``Content-Length``, half the body, then the connection closes;
- ``"no-length"``: the body with no ``Content-Length`` (HTTP/1.0, ends when the connection closes);
- ``"hang"``: the full ``Content-Length`` and half the body, then nothing until ``server.release`` is set
  (at most ``HANG_SECONDS``).
"""

from __future__ import annotations

import hashlib
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np

from convprop.data import RemoteDataset, RemoteFile, write_idx
from convprop.data.datasets import IDX_STEMS

LIFETIME_SECONDS = 120.0  # the request loop ends by itself after this, whatever the test does
HANG_SECONDS = 20.0


class FileServer:
    def __init__(self, files: dict[str, bytes], faults: dict[str, list[str]] | None = None):
        self.files = dict(files)
        self.faults = {name: list(kinds) for name, kinds in (faults or {}).items()}
        self.requests: list[str] = []
        self.release = threading.Event()
        self._stop = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                name = self.path.rsplit("/", 1)[-1]
                server.requests.append(name)
                body = server.files.get(name)
                if body is None:
                    self.send_error(404)
                    return
                pending = server.faults.get(name)
                fault = pending.pop(0) if pending else None
                if fault == "no-length":
                    self.protocol_version = "HTTP/1.0"
                    self.send_response(200)
                    self.end_headers()
                    self.wfile.write(body)
                    self.close_connection = True
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if fault in ("cut", "hang"):
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    if fault == "hang":
                        server.release.wait(HANG_SECONDS)
                    self.close_connection = True
                    return
                self.wfile.write(body)

            def log_message(self, *args):  # keep pytest output clean
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.httpd.timeout = 0.02  # handle_request() returns this often to look at the stop flag
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/data/"
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        deadline = time.monotonic() + LIFETIME_SECONDS
        while not self._stop.is_set() and time.monotonic() < deadline:  # bounded: by the flag and by time
            self.httpd.handle_request()

    def close(self) -> None:
        self._stop.set()
        self.release.set()
        self.thread.join(timeout=5)
        self.httpd.server_close()


def dead_url(scheme: str = "http") -> str:
    """A URL on a port nothing listens on: connections are refused."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"{scheme}://127.0.0.1:{port}/data/"


def make_idx_files(tmp_path, n_train=10, n_test=4) -> dict[str, bytes]:
    """The four gzipped IDX files of a tiny 6 x 6 dataset, as {mirror name: bytes}."""
    rng = np.random.default_rng(0)
    arrays = {
        "train_images": rng.integers(0, 256, (n_train, 6, 6), dtype=np.uint8),
        "train_labels": (np.arange(n_train) % 10).astype(np.uint8),
        "test_images": rng.integers(0, 256, (n_test, 6, 6), dtype=np.uint8),
        "test_labels": (np.arange(n_test) % 10).astype(np.uint8),
    }
    files = {}
    for key, array in arrays.items():
        path = write_idx(tmp_path / (IDX_STEMS[key] + ".gz"), array)
        files[path.name] = path.read_bytes()
        path.unlink()
    return files


def spec_for(files: dict[str, bytes], *mirrors: str, name: str = "tiny", sizes=None) -> RemoteDataset:
    sizes = sizes or {}
    remote = tuple(RemoteFile(n, hashlib.sha256(b).hexdigest(), sizes.get(n, len(b))) for n, b in files.items())
    return RemoteDataset(name=name, mirrors=mirrors, files=remote)
