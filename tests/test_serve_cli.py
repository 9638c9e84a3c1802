"""convprop serve as a program: run() without a model, the CLI's one-line errors, a real server in a
subprocess (port 0, latest run, Ctrl-C) and the warning for non-loopback hosts. The HTTP API itself is
tested in test_serve.py, whose checkpoint fixture this file reuses."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request

import pytest
from test_serve import CLASSES, check_answer, png_b64, save_untrained
from test_serve import ckpt as ckpt  # a fixture, used by name below

from convprop.cli import main
from convprop.serve import run

# --- run() and the command line --------------------------------------------------------------------


def test_run_without_runs_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=r"no trained model found in \./runs; train one first with: convprop train"):
        run(None)


def test_cli_serve_without_runs_prints_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["serve"]) == 2
    err = capsys.readouterr().err
    assert err == "convprop: error: no trained model found in ./runs; train one first with: convprop train\n"


def test_cli_serve_missing_checkpoint(tmp_path, capsys):
    assert main(["serve", str(tmp_path / "nope")]) == 2
    assert "no checkpoint at" in capsys.readouterr().err


def test_cli_serve_port_in_use(ckpt, capsys):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve", str(ckpt), "--port", str(port)]) == 2
    assert f"cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err


def start_server(args, cwd=None):
    """``python -m convprop serve ARGS`` in a subprocess; returns (process, url) once it prints its address."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "convprop", "serve", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    for line in proc.stdout:
        if line.startswith("open http://"):
            return proc, line.split()[1]
        if time.monotonic() > deadline:
            break
    proc.kill()
    raise AssertionError(f"the server printed no address; stderr:\n{proc.stderr.read()}")


def stop_server(proc) -> tuple[int, str, str]:
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    return proc.returncode, out, err


def test_serve_subprocess_latest_run_port_0_and_ctrl_c(tmp_path):
    """The real server: latest run from ./runs, a free port printed as a clickable URL, a clean Ctrl-C."""
    (tmp_path / "runs" / "20260101-000000").mkdir(parents=True)
    save_untrained(tmp_path / "runs" / "20260101-000000")
    proc, url = start_server(["--port", "0"], cwd=tmp_path)
    try:
        assert url.startswith("http://127.0.0.1:") and url.endswith("/") and not url.endswith(":0/")
        direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via an environment proxy
        with direct.open(url + "api/model", timeout=10) as r:
            assert json.load(r)["classes"] == CLASSES
        request = urllib.request.Request(
            url + "api/predict",
            data=json.dumps({"png": png_b64(5)}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with direct.open(request, timeout=10) as r:
            check_answer(json.load(r))
    finally:
        code, out, err = stop_server(proc)
    assert code == 0, err
    assert "server stopped" in out and "Traceback" not in err


def test_serve_on_all_interfaces_warns(ckpt):
    proc, url = start_server([str(ckpt), "--host", "0.0.0.0", "--port", "0"])
    code, _, err = stop_server(proc)
    assert url.startswith("http://127.0.0.1:")  # the wildcard address is shown as a clickable loopback one
    assert "warning: listening on 0.0.0.0" in err and "reachable from other machines" in err
    assert code == 0
