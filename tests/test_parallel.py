"""tinygan.parallel: operations split over threads give the unsplit results.

The split runs only on NumPy and only for big arrays; here MIN_SPLIT_SIZE is lowered
to 0 so that the small test arrays are split too, over 3 threads (so blocks are
uneven: 5 channels -> 1, 2, 2), and every layer that splits its work is compared,
forward and backward, with itself run unsplit, in float64.
"""

import threading
import time

import numpy as np
import pytest
from helpers import assert_close, host_rng

from tinygan import backend, nn, parallel
from tinygan.backend import xp
from tinygan.models import build
from tinygan.train import Trainer

ROUNDING = 1e-12  # float64: the same sums, a product's inner sum cut into blocks


@pytest.fixture
def split_all(monkeypatch):
    """Split everything, however small, over 3 threads; put the thread count back after."""
    monkeypatch.setattr(parallel, "MIN_SPLIT_SIZE", 0)
    previous = parallel.threads()
    parallel.set_threads(3)
    yield
    parallel.set_threads(previous)


def on_numpy():
    return backend.name() == "numpy"


@pytest.mark.parametrize("n", range(9))
@pytest.mark.parametrize("parts", [1, 2, 3, 4])
def test_blocks_cover_the_range_in_order(n, parts):
    slices = parallel.blocks(n, parts)
    covered = [i for s in slices for i in range(s.start, s.stop)]
    assert covered == list(range(n))
    assert len(slices) == min(n, parts)
    lengths = [s.stop - s.start for s in slices]
    assert not lengths or max(lengths) - min(lengths) <= 1


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "two", "", None])
def test_set_threads_rejects_what_is_no_thread_count(bad):
    with pytest.raises(ValueError, match="whole number >= 1"):
        parallel.set_threads(bad)


def test_threads_comes_from_the_environment(monkeypatch):
    previous = parallel.threads()
    try:
        monkeypatch.setattr(parallel, "_threads", None)
        monkeypatch.setenv("TINYGAN_THREADS", "2")
        assert parallel.threads() == 2
        monkeypatch.setattr(parallel, "_threads", None)
        monkeypatch.setenv("TINYGAN_THREADS", "lots")
        with pytest.raises(ValueError, match="^TINYGAN_THREADS=lots: .*whole number >= 1"):
            parallel.threads()
        monkeypatch.setattr(parallel, "_threads", None)
        monkeypatch.delenv("TINYGAN_THREADS")
        assert parallel.threads() == 1
    finally:
        parallel.set_threads(previous)


def test_run_calls_every_index_once_on_several_threads(split_all):
    seen, threads_used, lock = [], set(), threading.Lock()

    def part(s):
        with lock:
            seen.extend(range(s.start, s.stop))
            threads_used.add(threading.get_ident())

    parallel.run(part, 10, 10)
    assert sorted(seen) == list(range(10))
    # the caller and at least one helper (a helper that is done may take the next block)
    assert len(threads_used) >= 2 if on_numpy() else len(threads_used) == 1  # CuPy: no split


def test_small_work_is_not_split(monkeypatch):
    previous = parallel.threads()
    parallel.set_threads(2)
    try:
        calls = []
        parallel.run(calls.append, 100, parallel.MIN_SPLIT_SIZE - 1)
        assert calls == [slice(0, 100)]
    finally:
        parallel.set_threads(previous)


def test_a_block_does_not_split_again(split_all):
    inner = []
    parallel.run(lambda s: inner.append(parallel.split_count(10**9)), 6, 6)
    assert inner == [1] * len(inner) and len(inner) == (3 if on_numpy() else 1)


@pytest.mark.parametrize("failing", [0, 8])  # a block on a helper thread, the caller's block
def test_an_error_in_any_block_is_raised_after_all_blocks_ran(split_all, failing):
    done = []

    def part(s):
        if s.start <= failing < s.stop:
            raise KeyError("block failed")
        done.append(s)

    with pytest.raises(KeyError, match="block failed"):
        parallel.run(part, 9, 9)
    assert len(done) == (2 if on_numpy() else 0)


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_together_runs_two_tasks_at_once_on_exactly_two_threads(split_all, threads):
    """On two threads (NumPy) the tasks overlap: each waits at a barrier for the other,
    which would time out if they ran one after the other. Otherwise they run in order on
    the calling thread. Nothing inside a task is split again."""
    parallel.set_threads(threads)
    at_once = threads == 2 and on_numpy()
    barrier = threading.Barrier(2, timeout=10)
    seen = []

    def task(result):
        def run():
            seen.append((result, threading.current_thread(), parallel.split_count(10**9)))
            if at_once:
                barrier.wait()
            return result
        return run

    assert parallel.together(task("first"), task("second"), 10**6) == ("first", "second")
    assert sorted(r for r, _, _ in seen) == ["first", "second"]
    callers = {thread for _, thread, _ in seen}
    assert len(callers) == (2 if at_once else 1)
    if at_once:
        assert [count for _, _, count in seen] == [1, 1]
    else:
        assert [r for r, _, _ in seen] == ["first", "second"]


@pytest.mark.parametrize("failing", ["first", "second"])
def test_an_error_in_either_task_is_raised_after_both_finished(split_all, failing):
    parallel.set_threads(2)
    finished = []

    def task(name):
        def run():
            if name == failing:
                raise KeyError(f"{name} failed")
            time.sleep(0.05)  # still running when the other one fails
            finished.append(name)
        return run

    with pytest.raises(KeyError, match=f"{failing} failed"):
        parallel.together(task("first"), task("second"), 10**6)
    other = {"first": "second", "second": "first"}[failing]
    # one after the other (not NumPy): a failing first task stops there, as plain code would
    assert finished == ([other] if on_numpy() or failing == "second" else [])


@pytest.mark.parametrize("frozen, data_input", [(False, False), (True, False), (False, True)])
def test_conv2d_backward_runs_two_tasks_only_when_both_gradients_are_wanted(
        split_all, monkeypatch, frozen, data_input):
    """With one gradient only (a frozen D in G's step, data as input), that one task's
    products are split over the threads rather than run unsplit beside an empty task."""
    calls = []
    real = parallel.together
    monkeypatch.setattr(parallel, "together", lambda *a: calls.append(a) or real(*a))
    parallel.set_threads(2)
    layer = nn.Conv2d(3, 4, 4, 2, 1).requires_grad_(not frozen).input_grad_(not data_input)
    out = layer.forward(backend.to_device(host_rng(5).standard_normal((2, 3, 8, 8))))
    dx = layer.backward(xp.ones_like(out))
    assert len(calls) == (0 if frozen or data_input else 1)
    assert (dx is None) == data_input


def test_products_split_equal_unsplit(split_all):
    rng = host_rng(0)
    a = backend.to_device(rng.standard_normal((6, 40)))
    b = backend.to_device(rng.standard_normal((40, 11)))
    assert_close(parallel.matmul(a, b, xp.empty((6, 11))), a @ b, ROUNDING)
    assert_close(parallel.matmul_sum(a, b), a @ b, ROUNDING)
    assert_close(parallel.matmul_sum(a, b.T.copy().T), a @ b, ROUNDING)  # any layout


def test_elementwise_cuts_the_outermost_axis_in_memory(split_all):
    batch_last = xp.zeros((4, 5, 3, 2)).transpose(3, 0, 1, 2)  # (N=2, C=4, ...), C outermost
    shapes = []
    parallel.elementwise(lambda block: shapes.append(block.shape), batch_last)
    expected = [(2, 1, 5, 3), (2, 1, 5, 3), (2, 2, 5, 3)] if on_numpy() else [(2, 4, 5, 3)]
    assert sorted(shapes) == expected


def layer_cases():
    """(name, layer factory, input shape, batch-last input?): every layer that splits."""
    return [
        ("conv", lambda: nn.Conv2d(5, 7, 4, 2, 1), (3, 5, 9, 8), False),
        ("conv batch last", lambda: nn.Conv2d(5, 7, 3, 1, 0), (3, 5, 6, 6), True),
        ("convT", lambda: nn.ConvTranspose2d(5, 7, 4, 2, 1), (3, 5, 4, 5), True),
        # fewer channels than threads: copies unsplit, products still split
        ("conv 1 channel", lambda: nn.Conv2d(1, 4, 4, 2, 1), (5, 1, 8, 8), False),
        ("convT to 2 channels", lambda: nn.ConvTranspose2d(4, 2, 4, 2, 1), (5, 4, 3, 3), True),
        ("dense", lambda: nn.Dense(13, 7), (6, 13), False),
        ("relu", nn.ReLU, (3, 5, 4, 4), True),
        ("leaky", lambda: nn.LeakyReLU(0.2), (3, 5, 4, 4), True),
        ("leaky steep", lambda: nn.LeakyReLU(1.5), (6, 5), False),
        ("bn2d", lambda: nn.BatchNorm2d(5), (3, 5, 4, 4), True),
        ("bn1d", lambda: nn.BatchNorm1d(5), (6, 5), False),
        ("bn1d NCL", lambda: nn.BatchNorm1d(5), (6, 5, 3), False),
    ]


def run_layer(make, x, dout, training):
    backend.seed(1)
    layer = make()
    for key in layer.params:
        layer.params[key] = layer.params[key].astype(xp.float64)
    layer.zero_grad()
    layer.train(training)
    out = layer.forward(x)
    dx = layer.backward(dout)
    return out, dx, {k: g.copy() for k, g in layer.grads.items()}


@pytest.mark.parametrize("threads", [2, 3])  # 2: Conv2d's two gradients as two tasks
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("name, make, shape, batch_last", layer_cases(),
                         ids=[case[0] for case in layer_cases()])
def test_layers_split_over_threads_equal_unsplit(split_all, name, make, shape, batch_last,
                                                 training, threads):
    rng = host_rng(2)
    x = rng.standard_normal(shape)
    if batch_last:  # the memory order the conv layers hand on
        x = np.ascontiguousarray(np.moveaxis(x, 0, -1))
        x = np.moveaxis(x, -1, 0)
    x = backend.to_device(x)
    out_shape = make().forward(x.astype(xp.float32)).shape
    dout = backend.to_device(rng.standard_normal(out_shape))
    parallel.set_threads(1)
    expected = run_layer(make, x, dout, training)
    parallel.set_threads(threads)
    actual = run_layer(make, x, dout, training)
    for what, got, want in zip(("out", "dx"), actual[:2], expected[:2], strict=True):
        assert got.dtype == want.dtype, what
        assert_close(got, want, ROUNDING, f"{name} {what}")
    assert actual[2].keys() == expected[2].keys()
    for key in expected[2]:
        assert_close(actual[2][key], expected[2][key], ROUNDING, f"{name} d{key}")


def test_a_dcgan_step_split_over_threads_matches_unsplit(split_all):
    real = backend.to_device(host_rng(3).uniform(-1, 1, (4, 1, 28, 28)).astype(np.float32))
    results = {}
    for n in (1, 2, 3):
        parallel.set_threads(n)
        backend.seed(0)
        trainer = Trainer(build("dcgan", (1, 28, 28)))
        losses = [trainer.step(real) for _ in range(2)]
        results[n] = [float(v) for step in losses for v in step.values()]
    for n in (2, 3):
        assert_close(np.array(results[n]), np.array(results[1]), 1e-5, f"losses, {n} threads")
