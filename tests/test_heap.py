"""convprop.heap: glibc's malloc keeps large freed arrays for the next training step."""

from __future__ import annotations

import ctypes
import ctypes.util
import subprocess
import sys

import pytest

from convprop import heap


def glibc() -> bool:
    try:
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").gnu_get_libc_version  # noqa: B018
    except (OSError, AttributeError):
        return False
    return True


@pytest.mark.skipif(not glibc(), reason="the tunables are glibc's")
def test_glibc_accepts_both_thresholds():
    assert heap.keep_freed_memory() is True


def test_the_environment_variable_opts_out(monkeypatch):
    monkeypatch.setenv(heap.ENVIRONMENT_VARIABLE, "0")
    assert heap.keep_freed_memory() is False


@pytest.mark.skipif(not glibc(), reason="the tunables are glibc's")
def test_importing_convprop_stops_malloc_from_mapping_a_big_array_afresh():
    """After ``import convprop`` a freed 8 MB array is reused, not unmapped and mapped again: the same
    address comes back and the second allocation costs no page faults (counted with getrusage)."""
    script = """
import resource, numpy as np
import convprop
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
a = np.ones(2_000_000, np.float32); del a  # 8 MB: above glibc's default mmap threshold of 128 KiB
before = faults()
for _ in range(20):
    a = np.ones(2_000_000, np.float32); del a
print(faults() - before)
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=120)
    assert int(out.stdout) < 100  # measured: 0; with CONVPROP_KEEP_FREED_MEMORY=0, about 900
