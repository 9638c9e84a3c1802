"""Downloads, through the real urllib code path, from a local HTTP server on 127.0.0.1.

Each test builds a RemoteDataset whose mirrors point at a threaded ``http.server`` on a random port,
serving small gzipped IDX files generated here; nothing leaves the machine.
"""

import hashlib
import re
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

import convprop.errors
from convprop.data import (
    REMOTE_DATASETS,
    ChecksumError,
    DownloadError,
    OfflineError,
    RemoteDataset,
    RemoteFile,
    default_cache_dir,
    download_files,
    load_dataset,
    write_idx,
)
from convprop.data.datasets import IDX_STEMS


class FileServer:
    """Serves ``files`` ({name: bytes}) at ``url``; 404 for anything else; records request paths."""

    def __init__(self, files: dict[str, bytes]):
        self.files = dict(files)
        self.requests: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                name = self.path.rsplit("/", 1)[-1]
                server.requests.append(name)
                body = server.files.get(name)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):  # keep pytest output clean
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/data/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.01,), daemon=True)  # fast shutdown
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def dead_url() -> str:
    """A URL on a port nothing listens on: connections are refused."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/data/"


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


def spec_for(files: dict[str, bytes], *mirrors: str, name: str = "tiny") -> RemoteDataset:
    remote = tuple(RemoteFile(n, hashlib.sha256(b).hexdigest(), len(b)) for n, b in files.items())
    return RemoteDataset(name=name, mirrors=mirrors, files=remote)


@pytest.fixture(autouse=True)
def no_proxies(monkeypatch):
    """A proxy from the environment must not reroute requests meant for 127.0.0.1."""
    for var in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def files(tmp_path):
    return make_idx_files(tmp_path)


@pytest.fixture
def server(files):
    srv = FileServer(files)
    yield srv
    srv.close()


def test_download_and_verify(tmp_path, files, server):
    cache = tmp_path / "cache"
    progress = []
    paths = download_files(spec_for(files, server.url), cache, progress=lambda *a: progress.append(a))
    assert set(paths) == set(files)
    for name, path in paths.items():
        assert path == cache / "tiny" / name and path.read_bytes() == files[name]
    assert sorted(server.requests) == sorted(files)
    assert not list((cache / "tiny").glob("*.part"))
    last = {name: (done, total) for name, done, total in progress}
    assert last == {name: (len(b), len(b)) for name, b in files.items()}


def test_cached_files_are_not_downloaded_again(tmp_path, files, server):
    spec = spec_for(files, server.url)
    download_files(spec, tmp_path)
    count = len(server.requests)
    download_files(spec, tmp_path)
    download_files(spec, tmp_path, download=False)
    assert len(server.requests) == count


def test_damaged_cache_entry_is_fetched_again(tmp_path, files, server):
    spec = spec_for(files, server.url)
    paths = download_files(spec, tmp_path)
    name = "train-labels-idx1-ubyte.gz"
    paths[name].write_bytes(b"garbage")
    with pytest.raises(FileNotFoundError, match=f"cached .*{name} is damaged .* and download=False"):
        download_files(spec, tmp_path, download=False)
    server.requests.clear()
    download_files(spec, tmp_path)
    assert server.requests == [name] and paths[name].read_bytes() == files[name]


def test_checksum_mismatch_is_reported_and_nothing_is_kept(tmp_path, files):
    name = "t10k-images-idx3-ubyte.gz"
    corrupted = dict(files, **{name: files[name][:-1] + bytes([files[name][-1] ^ 0xFF])})
    srv = FileServer(corrupted)
    try:
        spec = spec_for(files, srv.url)
        expected = spec.file(name).sha256
        actual = hashlib.sha256(corrupted[name]).hexdigest()
        with pytest.raises(ChecksumError) as info:
            download_files(spec, tmp_path)
    finally:
        srv.close()
    message = str(info.value)
    assert name in message and f"expected sha256 {expected}" in message and f"got {actual}" in message
    assert not (tmp_path / "tiny" / name).exists() and not (tmp_path / "tiny" / (name + ".part")).exists()


def test_first_mirror_404_falls_back_to_second(tmp_path, files, server):
    empty = FileServer({})
    try:
        paths = download_files(spec_for(files, empty.url, server.url), tmp_path)
    finally:
        empty.close()
    assert sorted(empty.requests) == sorted(files) == sorted(server.requests)
    assert all(p.read_bytes() == files[p.name] for p in paths.values())


def test_unreachable_first_mirror_falls_back_to_second(tmp_path, files, server):
    download_files(spec_for(files, dead_url(), server.url), tmp_path)
    assert sorted(server.requests) == sorted(files)


def test_server_down_gives_offline_message(tmp_path, files):
    url = dead_url()
    with pytest.raises(OfflineError) as info:
        download_files(spec_for(files, url, url), tmp_path)
    assert isinstance(info.value, ConnectionError) and isinstance(info.value, convprop.errors.ConvpropError)
    message = str(info.value)
    first = next(iter(files))
    assert message.startswith(f"could not download {first} from any mirror ({url}{first}: ")
    assert "you are probably offline: copy the 4 files" in message
    assert str(tmp_path / "tiny") in message and "or pass --data-dir" in message
    assert not list((tmp_path / "tiny").iterdir())


def test_all_mirrors_404_is_not_called_offline(tmp_path, files):
    empty = FileServer({})
    try:
        with pytest.raises(DownloadError, match=r"HTTP 404") as info:
            download_files(spec_for(files, empty.url), tmp_path)
    finally:
        empty.close()
    assert not isinstance(info.value, OfflineError)


def test_partial_download_from_a_crash_is_never_used(tmp_path, files):
    name = "train-images-idx3-ubyte.gz"
    directory = tmp_path / "tiny"
    directory.mkdir()
    stale = directory / f".{name}.crashed.part"  # what a killed process leaves behind
    stale.write_bytes(files[name][: len(files[name]) // 2])
    spec = spec_for(files, dead_url())
    with pytest.raises(OfflineError, match=name):
        download_files(spec, tmp_path)
    assert not (directory / name).exists()
    srv = FileServer(files)
    try:
        paths = download_files(spec_for(files, srv.url), tmp_path)
    finally:
        srv.close()
    assert paths[name].read_bytes() == files[name]  # the stale partial file was never taken for the file
    assert list(directory.glob("*.part")) == [stale]  # and this process left no partial file of its own


def test_two_processes_downloading_at_once_do_not_corrupt_each_other(tmp_path, files):
    """Each download streams into its own private partial file, then renames it into place."""
    import threading

    srv = FileServer(files)
    try:
        spec = spec_for(files, srv.url)
        results, errors = [], []

        def fetch():
            try:
                results.append(download_files(spec, tmp_path))
            except Exception as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=fetch) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        srv.close()
    assert not errors
    for paths in results:
        assert all(paths[n].read_bytes() == files[n] for n in files)
    assert not list((tmp_path / "tiny").glob("*.part"))


def test_download_false_never_fetches(tmp_path, files, server):
    with pytest.raises(FileNotFoundError, match=r"is not in the cache .* and download=False: copy the files"):
        download_files(spec_for(files, server.url), tmp_path, download=False)
    assert server.requests == []


def test_load_dataset_downloads_mnist_through_the_registry(tmp_path, files, server, monkeypatch):
    monkeypatch.setitem(REMOTE_DATASETS, "mnist", spec_for(files, server.url, name="mnist"))
    d = load_dataset("mnist", cache_dir=tmp_path, seed=5)
    assert d.name == "mnist" and d.train_images.shape == (10, 1, 6, 6) and d.test_labels.shape == (4,)
    assert d.train_images.dtype == np.float32 and d.train_images.min() >= 0 and d.train_images.max() <= 1
    assert (tmp_path / "mnist" / "train-images-idx3-ubyte.gz").is_file()
    server.requests.clear()
    again = load_dataset("mnist", cache_dir=tmp_path, seed=6)  # official split: the seed does not matter
    assert server.requests == [] and np.array_equal(again.train_images, d.train_images)


def test_cache_dir_resolution(tmp_path, monkeypatch, files, server):
    monkeypatch.setenv("CONVPROP_DATA", str(tmp_path / "env"))
    assert default_cache_dir() == tmp_path / "env"
    download_files(spec_for(files, server.url), None)
    assert (tmp_path / "env" / "tiny" / "t10k-labels-idx1-ubyte.gz").is_file()
    monkeypatch.delenv("CONVPROP_DATA")
    assert "convprop" in str(default_cache_dir())


@pytest.mark.parametrize("name", sorted(REMOTE_DATASETS))
def test_registry_is_well_formed(name):
    spec = REMOTE_DATASETS[name]
    assert spec.name == name and len(spec.mirrors) >= 2
    assert all(m.startswith(("https://", "http://")) and m.endswith("/") for m in spec.mirrors)
    assert sorted(f.name for f in spec.files) == sorted(s + ".gz" for s in IDX_STEMS.values())
    assert all(re.fullmatch(r"[0-9a-f]{64}", f.sha256) for f in spec.files)
    assert len({f.sha256 for f in spec.files}) == 4


def test_real_checksums_are_the_published_ones():
    """Pinned from tensorflow_datasets/url_checksums/{mnist,fashion_mnist}.txt."""
    assert REMOTE_DATASETS["mnist"].file("train-images-idx3-ubyte.gz").sha256 == (
        "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609"
    )
    assert REMOTE_DATASETS["fashion-mnist"].file("t10k-labels-idx1-ubyte.gz").sha256 == (
        "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5"
    )
