"""convprop.fileio: atomic writes leave no temporary file behind, clean up after killed writes, and
name the file they were asked to write; check_suffix refuses an extension the writer cannot produce."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from convprop.errors import ArgumentError
from convprop.fileio import check_suffix, stale_temporaries, write_atomic, write_text_atomic


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped), so it names no live process."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_write_leaves_only_the_target(tmp_path):
    write_text_atomic(tmp_path / "a.json", "{}")
    write_text_atomic(tmp_path / "a.json", "[]")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]
    assert (tmp_path / "a.json").read_text() == "[]"


def test_a_failed_write_removes_its_temporary_file_and_keeps_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "model.bin"
    target.write_bytes(b"good")

    def no_space(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(OSError, match="No space left"):
        write_atomic(target, b"new")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.bin"] and target.read_bytes() == b"good"


def test_leftovers_of_a_killed_write_are_removed_by_the_next_one(tmp_path):
    pid = dead_pid()
    leftovers = [
        tmp_path / f".metrics.json.{pid}-0123456789abcdef.tmp",  # killed writer, gone
        tmp_path / ".metrics.json.0123456789abcdef.tmp",  # the older naming, once an hour old
    ]
    kept = [
        tmp_path / f".metrics.json.{os.getpid()}-0123456789abcdef.tmp",  # a live writer (this process)
        tmp_path / ".metrics.json.fedcba9876543210.tmp",  # the older naming, fresh: maybe being written
        tmp_path / f".other.json.{pid}-0123456789abcdef.tmp",  # another target's
        tmp_path / f".metrics.json.{pid}-0123456789abcdef.tmp.bak",  # not our pattern
        tmp_path / "notes.tmp",  # the user's
    ]
    for p in leftovers + kept:
        p.write_bytes(b"partial")
    hour_ago = time.time() - 7200
    os.utime(leftovers[1], (hour_ago, hour_ago))
    assert sorted(stale_temporaries(tmp_path / "metrics.json")) == sorted(leftovers)
    write_text_atomic(tmp_path / "metrics.json", "{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["metrics.json", *(p.name for p in kept)])


def test_a_killed_write_leaves_no_half_file_and_the_next_write_cleans_up(tmp_path):
    target = tmp_path / "big.bin"
    script = (
        "import os, sys; from convprop import fileio\n"
        "os.fsync = lambda fd: os.kill(os.getpid(), 9)\n"  # killed with the data written, before the rename
        f"fileio.write_atomic({str(target)!r}, b'x' * 100000)\n"
    )
    subprocess.run([sys.executable, "-c", script], env=os.environ | {"PYTHONPATH": os.getcwd()}, check=False)
    names = [p.name for p in tmp_path.iterdir()]
    assert len(names) == 1 and names[0].startswith(".big.bin.") and names[0].endswith(".tmp")  # no big.bin
    write_atomic(target, b"ok")
    assert [p.name for p in tmp_path.iterdir()] == ["big.bin"]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda d: d / "missing" / "x.json", r"cannot write '.*x\.json': the folder does not exist"),
        (lambda d: (d / "dir.json").mkdir() or d / "dir.json", r"cannot write '.*dir\.json': Is a directory"),
    ],
)
def test_errors_name_the_target_not_the_temporary_file(tmp_path, make, message):
    with pytest.raises(OSError, match=message) as info:
        write_text_atomic(make(tmp_path), "{}")
    assert ".tmp" not in str(info.value)
    assert [p for p in tmp_path.rglob("*.tmp")] == []


@pytest.mark.parametrize(
    ("path", "suffixes", "message"),
    [
        ("plot.jpg", (".png",), r"cannot write a plot to 'plot\.jpg': it has '\.jpg', expected '\.png'"),
        ("plot", (".png",), r"cannot write a plot to 'plot': it has no extension, expected '\.png'"),
        ("m.txt", (".json",), r"it has '\.txt', expected '\.json'"),
        ("m.png.gz", (".png", ".svg"), r"it has '\.gz', expected '\.png' or '\.svg'"),
    ],
)
def test_check_suffix_refuses_what_the_writer_cannot_produce(path, suffixes, message):
    with pytest.raises(ArgumentError, match=message):
        check_suffix(path, suffixes, "a plot")


@pytest.mark.parametrize("path", ["plot.png", "PLOT.PNG", "dir.v2/plot.png"])
def test_check_suffix_passes_the_right_extension(path):
    assert str(check_suffix(path, (".png",), "a plot")) == path
