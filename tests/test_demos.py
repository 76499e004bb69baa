"""Each demo runs for a few steps and writes its picture, so the demos cannot rot.

Demos are scripts read top to bottom; they run here in-process through ``runpy`` with
``sys.argv`` patched, as ``python demos/NAME.py ARGS`` would run them.
"""

import os
import runpy
import signal
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from helpers import pythonpath_with
from http_server import closed_port_url

DEMOS = Path(__file__).resolve().parents[1] / "demos"
PNG = b"\x89PNG\r\n\x1a\n"
# the shared data folder holds only (part of) the test split; the demos say so, as they should
pytestmark = pytest.mark.filterwarnings("ignore:.*(no train files found|partial copy)")


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("TINYGAN_MIRROR", closed_port_url())  # no demo may download here


@pytest.fixture
def empty_cache(tmp_path, monkeypatch):
    """Only --data-dir can answer (request after data_dir, which reads $TINYGAN_DATA)."""
    monkeypatch.setenv("TINYGAN_DATA", str(tmp_path / "empty-cache"))


def run_demo(monkeypatch, capsys, name, *args):
    monkeypatch.setattr(sys, "argv", [str(DEMOS / name), *map(str, args)])
    # what a demo installs for its own process (one_line_errors), put back afterwards
    monkeypatch.setattr(sys, "excepthook", sys.excepthook)
    monkeypatch.setattr(warnings, "showwarning", warnings.showwarning)
    previous = signal.getsignal(signal.SIGTERM)
    try:
        runpy.run_path(str(DEMOS / name), run_name="__main__")
    finally:
        signal.signal(signal.SIGTERM, previous)
    return capsys.readouterr().out


@pytest.mark.parametrize("name, args, code, message", [
    ("cgan_mnist.py", ["--data-dir", "{tmp}/nowhere"], 1, "cgan_mnist.py: error: data_dir "
                                                         "{tmp}/nowhere: no such folder"),
    # the output folder is checked before training, not after it
    ("gan_ring.py", ["--steps", "1", "--out", "{tmp}/file/run"], 1,
     "gan_ring.py: error: --out folder {tmp}/file/run: {tmp}/file is a file, not a folder"),
    ("wgan_grid.py", ["--steps", "1", "--out", "{tmp}/file"], 1,
     "wgan_grid.py: error: --out folder {tmp}/file is a file, not a folder"),
    # usage errors, as `tinygan` gives them: one line, the usage one --help away
    ("acgan_mnist.py", ["--steps", "0"], 2,
     "acgan_mnist.py: error: argument --steps: must be a positive integer, got 0 "
     "(see acgan_mnist.py --help)"),
    ("dcgan_fashion_mnist.py", ["--no-such-flag"], 2,
     "dcgan_fashion_mnist.py: error: unrecognized arguments: --no-such-flag"),
])
def test_a_demo_fails_in_one_line(tmp_path, name, args, code, message):
    """Run as a user runs them, in a process of their own: no traceback for a bad path."""
    (tmp_path / "file").write_text("a file where a folder should be\n")
    env = {**os.environ, "PYTHONPATH": pythonpath_with(DEMOS.parent), "OPENBLAS_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, str(DEMOS / name),
                             *(a.format(tmp=tmp_path) for a in args)],
                            capture_output=True, text=True, env=env, timeout=120, cwd=tmp_path)
    assert result.returncode == code
    assert result.stderr.splitlines() == [result.stderr.strip()], result.stderr
    assert result.stderr.startswith(message.format(tmp=tmp_path)), result.stderr
    assert result.stdout == ""  # it failed before training, before printing anything


def test_every_demo_is_tested():
    assert {p.name for p in DEMOS.glob("*.py")} == {
        "gan_ring.py", "wgan_grid.py", "dcgan_fashion_mnist.py", "cgan_mnist.py",
        "acgan_mnist.py"}


def test_gan_ring(tmp_path, monkeypatch, capsys):
    out = run_demo(monkeypatch, capsys, "gan_ring.py", "--steps", 3, "--out", tmp_path)
    assert "modes found:" in out
    assert (tmp_path / "ring.png").read_bytes().startswith(PNG)


def test_wgan_grid(tmp_path, monkeypatch, capsys):
    out = run_demo(monkeypatch, capsys, "wgan_grid.py", "--steps", 5, "--out", tmp_path)
    assert "n_critic 5, clip 0.01" in out
    assert (tmp_path / "grid.png").read_bytes().startswith(PNG)


def test_dcgan_fashion_mnist(tmp_path, monkeypatch, capsys, data_dir, empty_cache):
    out = run_demo(monkeypatch, capsys, "dcgan_fashion_mnist.py", "--steps", 2, "--every", 1,
                   "--batch-size", 8, "--data-dir", data_dir, "--out", tmp_path)
    assert "step 2: wrote" in out
    assert (tmp_path / "samples.png").read_bytes().startswith(PNG)


def test_cgan_mnist(tmp_path, monkeypatch, capsys, data_dir, empty_cache):
    run_demo(monkeypatch, capsys, "cgan_mnist.py", "--steps", 2, "--batch-size", 8,
             "--data-dir", data_dir, "--out", tmp_path)
    assert (tmp_path / "digits.png").read_bytes().startswith(PNG)


def test_acgan_mnist(tmp_path, monkeypatch, capsys, data_dir, empty_cache):
    out = run_demo(monkeypatch, capsys, "acgan_mnist.py", "--steps", 2, "--batch-size", 8,
                   "--data-dir", data_dir, "--out", tmp_path)
    assert "D's class head on 1000 held-out digits:" in out
    assert (tmp_path / "digits.png").read_bytes().startswith(PNG)
