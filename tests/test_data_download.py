"""Downloads through pooch (and requests), from a local HTTP server on 127.0.0.1.

Each test builds a RemoteDataset whose mirrors point at ``file_server.FileServer`` on a random port,
serving small gzipped IDX files generated here; nothing leaves the machine. Faults (a cut body, an
oversize body, a mirror down, no network) are scripted per file. The cache's own safety (damaged files
set aside, partial files of killed downloads) is in test_data_cache.py.
"""

import hashlib
import re
import socket

import pytest
from file_server import FileServer, dead_url, make_idx_files, spec_for

import convprop.errors
from convprop.data import (
    REMOTE_DATASETS,
    ChecksumError,
    DownloadError,
    NotCachedError,
    OfflineError,
    RemoteDataset,
    RemoteFile,
    default_cache_dir,
    download_files,
    load_dataset,
)
from convprop.data.datasets import IDX_STEMS
from convprop.data.download import PARTIAL_PREFIX


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


def fetch(spec, cache, **kwargs):
    """download_files without retries (pooch would wait a second before each) or a progress bar."""
    kwargs.setdefault("retries", 0)
    kwargs.setdefault("progress", False)
    return download_files(spec, cache, **kwargs)


def no_private_names(message: str) -> bool:
    """Messages name the user's files and URLs, never our temporary files."""
    return PARTIAL_PREFIX not in message and not re.search(r"\btmp\w{8}\b", message)


def test_download_and_verify(tmp_path, files, server):
    cache = tmp_path / "cache"
    progress = []
    paths = fetch(spec_for(files, server.url), cache, progress=lambda *a: progress.append(a))
    assert set(paths) == set(files)
    for name, path in paths.items():
        assert path == cache / "tiny" / name and path.read_bytes() == files[name]
    assert sorted(server.requests) == sorted(files)
    assert sorted(p.name for p in (cache / "tiny").iterdir()) == sorted(files)  # no partial file, nothing else
    last = {name: (done, total) for name, done, total in progress}
    assert last == {name: (len(b), len(b)) for name, b in files.items()}


def test_tqdm_progress_bar_names_the_file(tmp_path, files, server, capsys):
    download_files(spec_for(files, server.url), tmp_path, retries=0)  # progress=True: the default
    err = capsys.readouterr().err
    assert "train-images-idx3-ubyte.gz" in err and no_private_names(err)


def test_cached_files_are_not_downloaded_again(tmp_path, files, server):
    spec = spec_for(files, server.url)
    fetch(spec, tmp_path)
    count = len(server.requests)
    fetch(spec, tmp_path)
    fetch(spec, tmp_path, download=False)
    assert len(server.requests) == count


def test_checksum_mismatch_is_reported_and_nothing_is_kept(tmp_path, files):
    name = "t10k-images-idx3-ubyte.gz"
    corrupted = dict(files, **{name: files[name][:-1] + bytes([files[name][-1] ^ 0xFF])})
    srv = FileServer(corrupted)
    try:
        spec = spec_for(files, srv.url)
        expected = spec.file(name).sha256
        actual = hashlib.sha256(corrupted[name]).hexdigest()
        with pytest.raises(ChecksumError) as info:
            fetch(spec, tmp_path)
    finally:
        srv.close()
    message = str(info.value)
    assert name in message and f"expected sha256 {expected}" in message and f"got {actual}" in message
    assert no_private_names(message)
    directory = tmp_path / "tiny"
    assert not (directory / name).exists() and not list(directory.glob(f"{PARTIAL_PREFIX}*"))


def test_first_mirror_404_falls_back_to_second(tmp_path, files, server):
    empty = FileServer({})
    try:
        paths = fetch(spec_for(files, empty.url, server.url), tmp_path)
    finally:
        empty.close()
    assert sorted(empty.requests) == sorted(files) == sorted(server.requests)
    assert all(p.read_bytes() == files[p.name] for p in paths.values())


def test_mirror_down_falls_back_to_the_next(tmp_path, files, server):
    fetch(spec_for(files, dead_url(), server.url), tmp_path)
    assert sorted(server.requests) == sorted(files)


def test_server_down_gives_offline_message(tmp_path, files):
    url = dead_url()
    with pytest.raises(OfflineError) as info:
        fetch(spec_for(files, url, url), tmp_path)
    assert isinstance(info.value, ConnectionError) and isinstance(info.value, convprop.errors.ConvpropError)
    message = str(info.value)
    first = next(iter(files))
    assert message.startswith(f"could not download {first} from any mirror ({url}{first}: connection refused; ")
    assert "you are probably offline: copy " + ", ".join(files) in message
    assert str(tmp_path / "tiny") in message and "or pass --data-dir" in message
    assert not list((tmp_path / "tiny").iterdir())


def test_no_network_at_all_with_the_real_registry(tmp_path, monkeypatch):
    """No DNS, no route: every mirror of the real registry fails fast, and the message says offline."""

    def no_dns(*args, **kwargs):
        raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)
    with pytest.raises(OfflineError, match=r"host name not resolved.*you are probably offline") as info:
        fetch(REMOTE_DATASETS["mnist"], tmp_path)
    assert all(m in str(info.value) for m in REMOTE_DATASETS["mnist"].mirrors)


def test_all_mirrors_404_is_not_called_offline(tmp_path, files):
    empty = FileServer({})
    try:
        with pytest.raises(DownloadError, match=r"HTTP 404") as info:
            fetch(spec_for(files, empty.url), tmp_path)
    finally:
        empty.close()
    assert not isinstance(info.value, OfflineError)


def test_interrupted_download_is_reported_and_the_next_mirror_used(tmp_path, files):
    name = "train-images-idx3-ubyte.gz"
    cut = FileServer(files, faults={name: ["cut"] * 3})
    good = FileServer(files)
    try:
        with pytest.raises(DownloadError, match=rf"{name} from any mirror \({cut.url}{name}: .*broke off") as info:
            fetch(spec_for(files, cut.url), tmp_path / "a")
        paths = fetch(spec_for(files, cut.url, good.url), tmp_path / "b")
    finally:
        cut.close()
        good.close()
    assert not isinstance(info.value, OfflineError) and no_private_names(str(info.value))
    assert not (tmp_path / "a" / "tiny" / name).exists()
    assert paths[name].read_bytes() == files[name] and good.requests == [name]


def test_interrupted_download_is_retried_by_pooch(tmp_path, files):
    name = "train-labels-idx1-ubyte.gz"
    srv = FileServer(files, faults={name: ["cut"]})  # only the first request is cut
    try:
        paths = fetch(spec_for(files, srv.url), tmp_path, retries=1)
    finally:
        srv.close()
    assert srv.requests.count(name) == 2 and paths[name].read_bytes() == files[name]


@pytest.mark.parametrize(
    "fault, match",
    [
        (None, r"announces \d+ bytes, more than the published size 100 of train-images"),  # from Content-Length
        ("no-length", r"sent more than the published size 100 bytes of train-images"),  # counted while reading
    ],
)
def test_body_larger_than_the_published_size_is_refused(tmp_path, files, fault, match):
    name = "train-images-idx3-ubyte.gz"
    assert len(files[name]) > 100
    srv = FileServer(files, faults={name: [fault]} if fault else None)
    try:
        with pytest.raises(DownloadError, match=match) as info:
            fetch(spec_for(files, srv.url, sizes={name: 100}), tmp_path)
    finally:
        srv.close()
    assert not isinstance(info.value, OfflineError)
    assert not (tmp_path / "tiny" / name).exists() and not list((tmp_path / "tiny").glob(f"{PARTIAL_PREFIX}*"))


def test_https_mirrors_are_tried_first(tmp_path, files, server):
    https = dead_url("https")
    spec = spec_for(files, server.url, https)
    assert spec.ordered_mirrors() == (https, server.url)
    fetch(spec, tmp_path)  # the dead HTTPS mirror first, then the live HTTP one
    assert sorted(server.requests) == sorted(files)
    for name in REMOTE_DATASETS:
        ordered = REMOTE_DATASETS[name].ordered_mirrors()
        assert ordered == REMOTE_DATASETS[name].mirrors and ordered[0].startswith("https://")
    with pytest.raises(OfflineError) as info:
        fetch(spec_for(files, dead_url(), https), tmp_path / "other")
    assert str(info.value).index(https) < str(info.value).index("http://")


def test_two_processes_downloading_at_once_do_not_corrupt_each_other(tmp_path, files):
    """Each download streams into its own private partial folder, then renames the file into place.

    A file another download renames into place while this one looks at the cache must count as cached, not as
    "something that is not a regular file" (CI caught that race once); a few rounds of six give it room to show.
    """
    import threading

    srv = FileServer(files)
    try:
        spec = spec_for(files, srv.url)
        for round_ in range(3):
            cache = tmp_path / f"round-{round_}"
            results, errors = [], []

            def run(cache=cache, results=results, errors=errors):
                try:
                    results.append(fetch(spec, cache))
                except Exception as exc:  # pragma: no cover - reported below
                    errors.append(exc)

            threads = [threading.Thread(target=run) for _ in range(6)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert not errors
            assert len(results) == 6
            for paths in results:
                assert all(paths[n].read_bytes() == files[n] for n in files)
            assert sorted(p.name for p in (cache / "tiny").iterdir()) == sorted(files)
    finally:
        srv.close()


def test_download_false_never_fetches(tmp_path, files, server):
    with pytest.raises(NotCachedError, match=r"is not in the cache .* and download=False: copy the files") as info:
        fetch(spec_for(files, server.url), tmp_path, download=False)
    assert isinstance(info.value, FileNotFoundError) and isinstance(info.value, DownloadError)
    assert server.requests == []


def test_unwritable_cache_folder_is_named(tmp_path, files, server):
    blocker = tmp_path / "cache"
    blocker.write_text("a file where the cache folder should be")
    with pytest.raises(DownloadError, match=rf"cannot write into the cache folder {re.escape(str(blocker))}"):
        fetch(spec_for(files, server.url), blocker)
    assert blocker.read_text() == "a file where the cache folder should be"


def test_load_dataset_downloads_mnist_through_the_registry(tmp_path, files, server, monkeypatch):
    monkeypatch.setitem(REMOTE_DATASETS, "mnist", spec_for(files, server.url, name="mnist"))
    d = load_dataset("mnist", cache_dir=tmp_path, seed=5, progress=False)
    assert d.name == "mnist" and d.train_images.shape == (10, 1, 6, 6) and d.test_labels.shape == (4,)
    assert (tmp_path / "mnist" / "train-images-idx3-ubyte.gz").is_file()
    server.requests.clear()
    again = load_dataset("mnist", cache_dir=tmp_path, seed=6)  # official split: the seed does not matter
    assert server.requests == [] and (again.train_images == d.train_images).all()


def test_cache_dir_resolution(tmp_path, monkeypatch, files, server):
    monkeypatch.setenv("CONVPROP_DATA", str(tmp_path / "env"))
    assert default_cache_dir() == tmp_path / "env"
    fetch(spec_for(files, server.url), None)
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
    assert all(isinstance(f.size, int) and 4_000 < f.size < 30_000_000 for f in spec.files)


def test_real_checksums_and_sizes_are_the_published_ones():
    """Pinned from tensorflow_datasets/url_checksums/{mnist,fashion_mnist}.txt."""
    mnist = REMOTE_DATASETS["mnist"].file("train-images-idx3-ubyte.gz")
    assert (mnist.sha256, mnist.size) == ("440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609", 9_912_422)
    fashion = REMOTE_DATASETS["fashion-mnist"].file("t10k-labels-idx1-ubyte.gz")
    assert (fashion.sha256, fashion.size) == ("67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5", 5_148)


SHA = "0" * 64


@pytest.mark.parametrize(
    "build, error, match",
    [
        (lambda: RemoteFile("a/b.gz", SHA), convprop.errors.ArgumentError, r"plain file name, got 'a/b.gz'"),
        (lambda: RemoteFile("a.gz", "ABC"), convprop.errors.ArgumentError, r"64 lower-case hex digits, got 'ABC'"),
        (lambda: RemoteFile("a.gz", SHA, 0), convprop.errors.ArgumentError, r"positive int of bytes or None, got 0"),
        (lambda: RemoteDataset("d", "https://x/", ()), convprop.errors.ArgumentTypeError, r"a tuple of URLs"),
        (lambda: RemoteDataset("d", ("ftp://x/",), ()), convprop.errors.ArgumentError, r"http\(s\):// URL"),
        (lambda: RemoteDataset("d", (), ("a.gz",)), convprop.errors.ArgumentTypeError, r"tuple of RemoteFile"),
        (lambda: download_files("mnist"), convprop.errors.ArgumentTypeError, r"must be a RemoteDataset, got str"),
        (lambda: download_files(REMOTE_DATASETS["mnist"], retries=-1), convprop.errors.ArgumentError, r"retries"),
    ],
)  # fmt: skip
def test_bad_specs_and_options_are_refused(build, error, match):
    with pytest.raises(error, match=match):
        build()
