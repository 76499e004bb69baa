"""The benchmark scripts run end to end, as a user runs them: tiny sizes, few rounds.

No time is checked here (timings belong to the benchmarks, not to tests). What is checked
is that each script runs on the backend under test (so under ``TINYGAN_BACKEND=cupy`` the
GPU paths: the NumPy comparison run, device synchronisation, the GPU memory pool), that it
compares with PyTorch exactly when a usable PyTorch is installed, and that it writes the
JSON that RESULTS.md and ``plot_results.py`` are built from.
"""

import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO, UNDER_TEST
from helpers import benchmarks_module, cupy_works, pythonpath_with

from tinygan import backend, nn, parallel
from tinygan.backend import xp

pytestmark = pytest.mark.slow


def torch_expected():
    """Whether the benchmarks should run the PyTorch peer: installed, and on the GPU with CUDA."""
    if importlib.util.find_spec("torch") is None:
        return False
    if UNDER_TEST == "numpy":
        return True
    import torch

    return torch.cuda.is_available()


def run_bench(tmp_path, script, *args):
    """Run benchmarks/<script> on the backend under test; return (its JSON, its stdout)."""
    out = tmp_path / f"{script}.json"
    env = {**os.environ, "PYTHONPATH": pythonpath_with(REPO)}
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / script), "--backend",
                           UNDER_TEST, *args, "--json", str(out)], capture_output=True,
                          text=True, env=env, cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    payload = json.loads(out.read_text())
    machine = payload["machine"]
    assert machine["numpy"] and machine["cores"] >= 1
    if importlib.util.find_spec("torch"):  # the instruction set its CPU kernels ran with
        assert machine["torch_cpu_kernels"]
    return payload, proc.stdout


def test_bench_step_times_both_programs_and_writes_what_the_plot_reads(tmp_path):
    payload, stdout = run_bench(tmp_path, "bench_step.py", "--models", "gan", "--batch", "16",
                                "32", "--threads", "1", "--rounds", "2", "--warmup", "1")
    with_torch, on_gpu = torch_expected(), UNDER_TEST == "cupy"
    programs = {"tinygan"} | ({"torch"} if with_torch else set()) | ({"numpy"} if on_gpu else set())
    assert payload["benchmark"] == "step"
    assert [(e["model"], e["batch"], e["threads"]) for e in payload["results"]] == [
        ("gan", 16, 1), ("gan", 32, 1)]
    for entry in payload["results"]:
        assert entry["backend"] == UNDER_TEST and set(entry["runs"]) == programs
        for program, runs in entry["runs"].items():
            assert len(runs) == 2 and all(t > 0 for t in runs), program
            assert entry["stats"][program]["min"] <= entry["stats"][program]["median"]
        assert ("ratio" in entry) == with_torch
        assert ("speedup_over_numpy" in entry) == on_gpu
        if with_torch:  # a ratio of medians, and the spread of the per-round ratios
            ratio, runs = entry["ratio"], entry["runs"]
            medians = [entry["stats"][p]["median"] for p in ("tinygan", "torch")]
            assert ratio["median"] == pytest.approx(medians[0] / medians[1])
            assert ratio["min"] == min(a / b for a, b in zip(runs["tinygan"], runs["torch"]))
    assert ("tinygan / torch" in stdout) == with_torch
    assert ("numpy / cupy" in stdout) == on_gpu

    png = tmp_path / "step_time.png"
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "plot_results.py"),
                           str(png), str(tmp_path / "bench_step.py.json")],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "MPLBACKEND": "Agg"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_layers_puts_each_layer_beside_its_products_and_its_mirror(tmp_path):
    small = ["D conv 1->64 28->14", "G convT 64->1 14->28"]  # a ConvTranspose2d and its mirror
    # two rounds: a ratio of the medians, not a median of per-round ratios, is what is checked
    payload, _ = run_bench(tmp_path, "bench_layers.py", "--layers", *small, "--batch", "4",
                           "--threads", "1", "--rounds", "2")
    results = payload["results"]
    assert [e["layer"] for e in results] == small
    for entry in results:
        assert entry["batch"] == 4 and entry["backend"] == UNDER_TEST
        fb, gemm = entry["forward_backward"]["median"], entry["gemm_seconds"]["median"]
        assert 0 < entry["forward"]["median"] and 0 < gemm and 0 < fb
        assert entry["gemm_share"]["median"] == pytest.approx(gemm / fb)
        assert ("ratio" in entry) == torch_expected()
    assert "vs_mirror" not in results[0] and results[1]["vs_mirror"]["median"] > 0


def test_bench_gemm_times_every_product_the_layers_issue(tmp_path):
    payload, _ = run_bench(tmp_path, "bench_gemm.py", "--batch", "4", "--threads", "1",
                           "--rounds", "1")
    rows = {(r["layer"], r["gemm"]): r for r in payload["results"]}
    bench_gemm = benchmarks_module("bench_gemm")
    LAYERS, layer_gemms = bench_gemm.LAYERS, bench_gemm.layer_gemms
    expected = {("reference", "1024^3")} | {(name, g[0]) for name in LAYERS
                                          for g in layer_gemms(name, 4)}
    assert set(rows) == expected
    for (name, label), row in rows.items():
        assert row["gflops"]["median"] > 0
        if name != "reference":  # the shapes the layer issues, batch 4 unless it is fixed
            assert [g[1:4] for g in layer_gemms(name, 4) if g[0] == label] == [
                (row["m"], row["k"], row["n"])]


@pytest.mark.parametrize("name", ["D conv 1->64 28->14", "D conv 64->128 14->7",
                                  "G convT 128->64 7->14", "G convT 64->1 14->28"])
def test_layer_gemms_are_the_products_the_layer_issues(name, monkeypatch):
    """bench_gemm's table of a layer's products, checked against the products that
    layer's forward + backward really calls (shapes m x k x n, batch 3)."""
    bench_gemm = benchmarks_module("bench_gemm")
    cls, cin, cout, size, _ = bench_gemm.LAYERS[name]
    issued = []

    def recording(product):
        def record(a, b, *args):
            issued.append((a.shape[0], a.shape[1], b.shape[1]))
            return product(a, b, *args)
        return record

    monkeypatch.setattr(parallel, "matmul", recording(parallel.matmul))
    monkeypatch.setattr(parallel, "matmul_sum", recording(parallel.matmul_sum))
    layer = getattr(nn, cls)(cin, cout, 4, 2, 1)
    out = layer.forward(backend.to_device(np.ones((3, cin, size, size), np.float32)))
    layer.backward(xp.ones_like(out))
    assert sorted(issued) == sorted(g[1:4] for g in bench_gemm.layer_gemms(name, 3))


def test_bench_memory_compares_peak_memory(tmp_path):
    payload, _ = run_bench(tmp_path, "bench_memory.py", "--batch", "8", "--steps", "1",
                           "--rounds", "1")
    (entry,) = payload["results"]
    programs = ["tinygan"] + (["torch"] if torch_expected() else [])
    for program in programs:
        mem = entry[program]
        assert mem["peak_mb"] >= mem["before_mb"] > 0
        assert mem["training_mb"] == pytest.approx(mem["peak_mb"] - mem["before_mb"])
        assert ("device_mb" in mem) == (UNDER_TEST == "cupy")
    assert ("peak_ratio" in entry) == ("torch" in programs)
    if "torch" in programs:
        assert entry["peak_ratio"] == pytest.approx(entry["tinygan"]["peak_mb"]
                                                    / entry["torch"]["peak_mb"])


def test_python_m_benchmarks_hands_its_options_to_every_script(tmp_path, monkeypatch):
    """`python -m benchmarks [--quick] [--backend B] [--out DIR]`, the one command RESULTS.md
    gives for re-running everything (on a GPU too): each script gets the backend, --quick's
    settings and its own JSON file, and the plot is drawn from the step JSON."""
    run_all, plot_results = benchmarks_module("__main__"), benchmarks_module("plot_results")
    calls = []
    for name in ("bench_gemm", "bench_layers", "bench_step", "bench_memory", "bench_scratch"):
        monkeypatch.setattr(getattr(run_all, name), "main",
                            lambda argv, name=name: calls.append((name, argv)))
    monkeypatch.setattr(plot_results, "main", lambda argv: calls.append(("plot", argv)))
    out = tmp_path / "out"
    run_all.main(["--quick", "--backend", "cupy", "--out", str(out)])
    json_of = {name: ["--json", str(out / f"{name}.json")] for name in
               ("gemm", "layers", "step", "memory")}
    quick = ["--backend", "cupy", "--rounds", "2"]
    assert calls == [
        ("bench_gemm", quick + ["--batch", "64"] + json_of["gemm"]),
        ("bench_layers", quick + ["--batch", "64"] + json_of["layers"]),
        ("bench_step", quick + ["--batch", "64"] + json_of["step"]),
        ("bench_memory", quick + ["--rounds", "1"] + json_of["memory"]),
        ("plot", [str(out / "step_time.png"), str(out / "step.json")]),
    ]  # no from-scratch peer on the GPU: it is NumPy code
    assert out.is_dir()
    calls.clear()
    run_all.main(["--quick", "--out", str(out)])
    assert calls[-2] == ("bench_scratch", ["--rounds", "2", "--json", str(out / "scratch.json")])
    calls.clear()
    run_all.main([])  # the defaults: NumPy, every batch and round count of each script
    assert calls == [(name, ["--backend", "numpy"]) for name in
                     ("bench_gemm", "bench_layers", "bench_step", "bench_memory")] + [
        ("bench_scratch", [])]


@pytest.mark.skipif(cupy_works(), reason="CuPy runs here: nothing to refuse")
@pytest.mark.parametrize("script", ["bench_step.py", "bench_layers.py", "bench_gemm.py",
                                    "bench_memory.py"])
def test_a_backend_that_cannot_run_is_one_line_not_a_workers_traceback(tmp_path, script):
    """--backend cupy without a GPU (or without CuPy): the reason, in one line."""
    env = {**os.environ, "PYTHONPATH": pythonpath_with(REPO)}
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / script), "--backend",
                           "cupy", "--threads", "1", "--rounds", "1"], capture_output=True,
                          text=True, env=env, cwd=tmp_path, timeout=300)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and len(lines) == 1, proc.stderr
    assert lines[0].startswith("--backend cupy: tinygan backend 'cupy'"), lines[0]
    assert "Traceback" not in proc.stdout


def test_programs_take_turns_going_first_and_ratios_are_of_medians(monkeypatch):
    """A program that always ran first met the machine in another state than the one after
    it; the GEMM share is a ratio of medians, as every other ratio (it was a median of
    per-round ratios)."""
    common = benchmarks_module("common")
    calls = []
    monkeypatch.setattr(common, "run_worker",
                        lambda script, spec, threads: calls.append(spec["impl"]) or spec["impl"])
    replies = common.alternate("script.py", [{"impl": "a"}, {"impl": "b"}], 1, 4)
    assert calls == ["a", "b", "b", "a", "a", "b", "b", "a"]
    assert replies == [["a"] * 4, ["b"] * 4]
    ratio = common.ratio_stats([1.0, 4.0, 2.0], [2.0, 2.0, 8.0])
    assert ratio == {"median": 2.0 / 2.0, "min": 0.25, "max": 2.0}


def test_bench_scratch_times_tinygan_against_the_from_scratch_peer(tmp_path):
    """The issue's 8x bar, measured on one machine: both programs, alternated, a ratio of
    medians. (The peer is NumPy code: tinygan runs on NumPy here whatever the backend.)"""
    out = tmp_path / "scratch.json"
    env = {**os.environ, "PYTHONPATH": pythonpath_with(REPO)}
    layers = ["D conv 1->64 28->14", "G convT 64->1 14->28"]
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "bench_scratch.py"),
                           "--layers", *layers, "--batch", "2", "--rounds", "2", "--json",
                           str(out)], capture_output=True, text=True, env=env, cwd=tmp_path,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    results = json.loads(out.read_text())["results"]
    assert [(e["layer"], e["batch"], e["threads"]) for e in results] == [
        (layers[0], 2, 1), (layers[1], 2, 1)]
    for entry in results:
        peer, ours = entry["scratch"]["median"], entry["tinygan"]["median"]
        assert peer > 0 and ours > 0
        assert entry["speedup"]["median"] == pytest.approx(peer / ours)
        assert entry["target"] == 8
        assert entry["met"] == (entry["speedup"]["median"] >= 8)
    assert "peer / tinygan" in proc.stdout


@pytest.mark.parametrize("impl, backend_name, threading, tinygan_threads, blas_threads", [
    ("tinygan", "numpy", "tinygan", "3", "1"),  # tinygan splits, BLAS on one thread
    ("tinygan", "numpy", "blas", "1", "3"),
    ("tinygan", "cupy", "tinygan", "1", "3"),  # nothing to split on a GPU
    ("torch", "numpy", "tinygan", "1", "3"),
    ("gemm", "numpy", "tinygan", "1", "3"),  # the machine's product rate: BLAS on all
])
def test_workers_get_the_threads_as_threading_says(impl, backend_name, threading,
                                                   tinygan_threads, blas_threads):
    common = benchmarks_module("common")
    env = common.worker_env(3, dict(impl=impl, backend=backend_name, threading=threading))
    assert env["TINYGAN_THREADS"] == tinygan_threads
    assert {env[var] for var in common.THREAD_VARS} == {blas_threads}


@pytest.mark.parametrize("unfused", [False, True])
def test_count_ops_charges_every_operation_of_a_step_to_a_tinygan_function(tmp_path, unfused):
    """The GPU-launch count runs on the CuPy stand-in whatever the backend under test; its
    total is the sum of its callers' counts. Adam is one fused launch per parameter, or
    the same number of operations for every parameter in its readable form."""
    out = tmp_path / "ops.json"
    env = {**os.environ, "PYTHONPATH": pythonpath_with(REPO)}
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "count_ops.py"),
                           "--models", "gan", "--batch", "8", "--json", str(out)]
                          + ["--unfused"] * unfused,
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    (entry,) = json.loads(out.read_text())["results"]
    assert (entry["model"], entry["batch"], entry["fused"]) == ("gan", 8, not unfused)
    assert entry["operations"] == sum(entry["by_caller"].values()) > 0
    assert "(outside tinygan)" not in entry["by_caller"]
    from tinygan.models import build

    model = build("gan", (1, 28, 28))
    params = sum(len(list(net.parameters())) for net in (model.generator, model.discriminator))
    if unfused:
        assert "kernels.py:adam" not in entry["by_caller"]
        adam = entry["by_caller"]["optim.py:update"]
        assert adam > params and adam % params == 0
    else:
        assert "optim.py:update" not in entry["by_caller"]
        assert entry["by_caller"]["kernels.py:adam"] == params
    kind = "unfused, " if unfused else ""
    assert (f"gan, batch 8, {kind}{entry['operations']} array operations per training step"
            in proc.stdout)


COUNT_SNIPPETS = """
import json, sys
sys.path.insert(0, sys.argv[1])
import count_ops

cp = count_ops.stand_in()
a, b = cp.zeros((4, 4), dtype=cp.float32), cp.ones((3, 4), dtype=cp.float32)
rng = cp.random.default_rng(0)


def slice_add():
    a[1:] += b  # an add; its write-back into a[1:]'s own memory is no copy


def views_and_allocations():
    a.reshape(16), a.T, a[1:], cp.empty((3,)), cp.empty_like(a), a.astype(cp.float32, copy=False)


def copies():
    cp.ascontiguousarray(a.T), a.astype(cp.float64), a.copy()


def arithmetic():
    a + a, a.sum(), cp.zeros_like(a), rng.standard_normal((3,), dtype=cp.float32)


print(json.dumps({f.__name__: count_ops.count_calls(f)[0]
                  for f in (slice_add, views_and_allocations, copies, arithmetic)}))
"""


def test_count_ops_counts_what_cupy_would_launch():
    """Hand-counted snippets: views, empty allocations, a no-op astype and the write-back of
    ``a[k] += b`` launch nothing; device copies, arithmetic, reductions, zero fills and
    random draws launch one each."""
    env = {**os.environ, "PYTHONPATH": pythonpath_with(REPO)}
    proc = subprocess.run([sys.executable, "-c", COUNT_SNIPPETS, str(REPO / "benchmarks")],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    counts = json.loads(proc.stdout.strip().splitlines()[-1])
    assert counts == {"slice_add": 1, "views_and_allocations": 0, "copies": 3, "arithmetic": 4}
