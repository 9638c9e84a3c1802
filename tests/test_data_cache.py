"""The download cache never loses a file: damaged files are set aside, killed downloads cleaned up.

Regression tests for issue 10's data-loss report (a damaged cached file was deleted before the
network was tried, and the offline message then asked for it to be copied back) and for partial
files left by a killed download. Servers: ``file_server.FileServer`` on 127.0.0.1.
"""

import os
import subprocess
import sys
import textwrap
import time

import pytest
from file_server import FileServer, dead_url, make_idx_files, spec_for

from convprop.data import DownloadError, NotCachedError, OfflineError, download_files
from convprop.data.cache import PARTIAL_PREFIX, STALE_PARTIAL_SECONDS, remove_stale_partials

NAME = "train-labels-idx1-ubyte.gz"


@pytest.fixture(autouse=True)
def no_proxies(monkeypatch):
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
    return download_files(spec, cache, retries=0, progress=False, **kwargs)


def test_damaged_cached_file_is_set_aside_never_deleted_and_fetched_again(tmp_path, files, server):
    spec = spec_for(files, server.url)
    paths = fetch(spec, tmp_path)
    directory = tmp_path / "tiny"
    for attempt, damage in enumerate([b"garbage", b"other garbage"], start=1):
        paths[NAME].write_bytes(damage)
        server.requests.clear()
        with pytest.warns(UserWarning, match=rf"cached .*{NAME} did not have the published SHA-256 .* set aside as"):
            fetch(spec, tmp_path)
        assert server.requests == [NAME] and paths[NAME].read_bytes() == files[NAME]
        aside = directory / (f"{NAME}.corrupt" + ("" if attempt == 1 else f"-{attempt}"))
        assert aside.read_bytes() == damage  # kept, byte for byte
    assert (directory / f"{NAME}.corrupt").read_bytes() == b"garbage"  # the earlier one is still there


def test_damaged_cached_file_with_download_false_is_left_alone(tmp_path, files, server):
    spec = spec_for(files, server.url)
    paths = fetch(spec, tmp_path)
    paths[NAME].write_bytes(b"garbage")
    with pytest.raises(NotCachedError, match=rf"cached .*{NAME} does not have the published SHA-256 .*left as it is"):
        fetch(spec, tmp_path, download=False)
    assert paths[NAME].read_bytes() == b"garbage" and not list((tmp_path / "tiny").glob("*.corrupt*"))


def test_damaged_cached_file_offline_is_kept_and_the_message_is_true(tmp_path, files, server):
    paths = fetch(spec_for(files, server.url), tmp_path)
    paths[NAME].write_bytes(b"my own copy, damaged")
    with pytest.raises(OfflineError) as info, pytest.warns(UserWarning, match="set aside"):
        fetch(spec_for(files, dead_url()), tmp_path)
    message = str(info.value)
    directory = tmp_path / "tiny"
    assert f"the cached {directory / NAME} did not have the published SHA-256" in message
    assert f"set aside as {NAME}.corrupt" in message
    assert f"you are probably offline: copy {NAME} (from another machine" in message  # only what is missing
    assert (directory / f"{NAME}.corrupt").read_bytes() == b"my own copy, damaged"
    assert all(paths[n].read_bytes() == files[n] for n in files if n != NAME)  # the others are untouched


def age(path, seconds):
    then = time.time() - seconds
    os.utime(path, (then, then))


def test_stale_partials_are_removed_and_nothing_else(tmp_path):
    d = tmp_path
    stale = d / f"{PARTIAL_PREFIX}dead"
    stale.mkdir()
    (stale / "tmpabcd1234").write_bytes(b"half a file")
    fresh = d / f"{PARTIAL_PREFIX}live"  # maybe another process downloading right now
    fresh.mkdir()
    (fresh / "tmpzzzz9999").write_bytes(b"in progress")
    odd = d / f"{PARTIAL_PREFIX}odd"  # not what a download leaves (a subfolder): not ours to judge
    (odd / "sub").mkdir(parents=True)
    old_part = d / f".{NAME}.x1y2z3.part"  # convprop 0.1's partial file
    old_part.write_bytes(b"half")
    user = [d / "notes.txt", d / "tmpabcdefgh", d / "mine.part", d / f"{NAME}.corrupt"]
    for path in user:
        path.write_bytes(b"the user's")
    for path in [stale / "tmpabcd1234", stale, odd, old_part, *user]:
        age(path, STALE_PARTIAL_SECONDS + 60)
    assert sorted(p.name for p in remove_stale_partials(d)) == sorted([stale.name, old_part.name])
    assert fresh.is_dir() and odd.is_dir() and all(p.read_bytes() == b"the user's" for p in user)


KILLED_DOWNLOAD = textwrap.dedent(
    """
    import sys
    sys.path[:0] = [sys.argv[3]]
    from file_server import spec_for
    from convprop.data import download_files
    files = {"big.gz": bytes(range(256)) * 4096}
    download_files(spec_for(files, sys.argv[1]), sys.argv[2], retries=0, progress=False)
    """
)


def test_partial_files_of_a_killed_download_are_cleaned_up_by_the_next(tmp_path):
    files = {"big.gz": bytes(range(256)) * 4096}
    srv = FileServer(files, faults={"big.gz": ["hang"]})  # half the body, then silence until released
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    tests_dir = os.path.dirname(__file__)
    child = subprocess.Popen([sys.executable, "-c", KILLED_DOWNLOAD, srv.url, str(tmp_path), tests_dir], env=env)
    try:
        directory = tmp_path / "tiny"
        deadline = time.monotonic() + 60
        partials = []
        while time.monotonic() < deadline and not any(p.stat().st_size for p in partials):
            time.sleep(0.05)
            partials = [p for p in directory.glob(f"{PARTIAL_PREFIX}*/*")] if directory.is_dir() else []
        assert partials, "the child never started writing"
    finally:
        child.kill()  # SIGKILL: no finally clause runs in the child
        child.wait(timeout=30)
        srv.release.set()
    (leftover,) = [p for p in directory.iterdir()]
    assert leftover.name.startswith(PARTIAL_PREFIX)  # what a killed download leaves: our own folder
    assert not (directory / "big.gz").exists()  # and never the file itself
    try:
        download_files(spec_for(files, srv.url), tmp_path, retries=0, progress=False)  # fresh: kept, not read
        assert leftover.is_dir()
        for path in [*leftover.iterdir(), leftover]:
            age(path, STALE_PARTIAL_SECONDS + 60)
        (directory / "big.gz").unlink()
        download_files(spec_for(files, srv.url), tmp_path, retries=0, progress=False)
    finally:
        srv.close()
    assert sorted(p.name for p in directory.iterdir()) == ["big.gz"]  # the stale partial folder is gone


def test_disk_full_is_a_download_error_naming_the_folder_and_no_other_mirror_is_tried(tmp_path, files, monkeypatch):
    import errno
    import tempfile

    empty = FileServer({})

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(tempfile, "NamedTemporaryFile", full)  # where pooch makes its temporary file
    try:
        with pytest.raises(DownloadError, match=r"cannot write .* into .*tiny: No space left on device") as info:
            fetch(spec_for(files, empty.url), tmp_path)
    finally:
        empty.close()
    assert not isinstance(info.value, OfflineError) and empty.requests == []
    assert PARTIAL_PREFIX not in str(info.value)
