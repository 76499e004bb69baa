"""One array operation split over several CPU threads (the NumPy backend only).

NumPy runs every elementwise pass, copy and reduction on one core; only its BLAS
(the matrix products) uses more. On two cores that leaves half the machine idle for
about half of a DCGAN step. But NumPy lets go of Python's global lock inside those
loops, so Python threads can run *disjoint parts* of one operation at the same time:
cut the arrays into blocks (channels, columns), give each thread one block, wait
for all. Each part writes only its own block of arrays allocated beforehand, so the
result is the same as the unsplit operation's, bit for bit, for every elementwise
pass and copy.

Matrix products are split the same way (``matmul``: blocks of columns), each thread
running its own single-threaded BLAS product. That is why BLAS should then be held
to one thread (``OPENBLAS_NUM_THREADS=1``, set before NumPy is imported): a
multi-threaded OpenBLAS keeps its worker spinning on the other core for a while after
every product, and a copy split over two threads then waits for that core instead of
using it. So the two ways of using N cores are

    OPENBLAS_NUM_THREADS=N                      (the default: only products use N cores)
    TINYGAN_THREADS=N OPENBLAS_NUM_THREADS=1    (everything big is split over N threads)

Two independent tasks (a conv layer's parameter and input gradients) can also run
side by side, each unsplit: ``together``, used on exactly two threads.

``TINYGAN_THREADS`` (or ``set_threads``) picks the thread count; it defaults to 1,
where nothing is split and no thread is started. On CuPy nothing is split either:
the GPU runs each operation in parallel already.
"""

import os
import threading
from concurrent.futures import ThreadPoolExecutor

from tinygan import backend
from tinygan.backend import xp

# below this many elements a thread's start-up (tens of microseconds) costs more than
# the half of the pass it saves
MIN_SPLIT_SIZE = 1 << 16
# a product's multiply-adds are counted as 1/32 of an element each: BLAS does about
# that many in the time an elementwise pass takes per element
BLAS_SPEEDUP = 32

_threads = None  # None: not read from TINYGAN_THREADS yet
_pool = None
_worker = threading.local()  # .busy: this thread is running one block of a split


def set_threads(n):
    """Split big operations over ``n`` threads from now on (1: do not split)."""
    global _threads, _pool
    if isinstance(n, str):
        n = int(n) if n.strip().isdigit() else n
    if not (isinstance(n, int) and not isinstance(n, bool) and n >= 1):
        raise ValueError(f"tinygan threads must be a whole number >= 1, got {n!r}")
    if _pool is not None:
        _pool.shutdown()
    _threads, _pool = n, None


def threads():
    """The number of threads big operations are split over (TINYGAN_THREADS, default 1)."""
    if _threads is None:
        requested = os.environ.get("TINYGAN_THREADS") or "1"
        try:
            set_threads(requested)
        except ValueError as err:
            raise ValueError(f"TINYGAN_THREADS={requested}: {err}") from None
    return _threads


def blocks(n, parts):
    """range(n) cut into at most ``parts`` slices of nearly equal length, in order."""
    bounds = [n * i // parts for i in range(parts + 1)]
    return [slice(lo, hi) for lo, hi in zip(bounds, bounds[1:], strict=False) if hi > lo]


def split_count(size):
    """How many blocks an operation on ``size`` elements is cut into here and now."""
    if size < MIN_SPLIT_SIZE or threads() == 1:  # asked first: the cheap, common answers
        return 1
    if getattr(_worker, "busy", False) or backend.name() != "numpy":
        return 1  # already inside a split (no nesting), or on the GPU
    return threads()


def run(part, n, size):
    """Call ``part(s)`` once for each block s of range(n), the blocks on different threads.

    ``part`` must read and write only what block s selects (or read what no block
    writes): that is what makes the blocks independent. ``size`` is the number of
    elements the operation touches (its cost), which decides whether splitting pays. The calling
    thread runs the last block itself; an exception in any block is raised here, after
    every block has finished.
    """
    count = split_count(size)
    if count == 1 or n < 2:  # the common case for small arrays: no list, no pool
        part(slice(0, n))
        return
    slices = blocks(n, count)
    futures = [pool().submit(_unsplit, part, s) for s in slices[:-1]]
    try:
        _unsplit(part, slices[-1])
    finally:
        for future in futures:  # wait for all before raising: none still writes after
            future.exception()
    for future in futures:
        future.result()


def together(first, second, size):
    """(first(), second()): two tasks that share no array they write, at once on two
    threads when there are exactly two, else one after the other.

    On two cores this beats splitting each operation of the tasks in two: one thread
    wake-up (tens of microseconds on a small virtual machine) instead of one per operation, and an
    operation that does not split well (col2im of an image's one channel) overlaps the
    other task instead of leaving a core idle. With more threads, splitting each
    operation over all of them is kept. Inside the tasks nothing is split. ``size``,
    the elements the tasks touch, decides whether a second thread pays, as in ``run``.
    """
    if threads() != 2 or split_count(size) == 1:
        return first(), second()
    future = pool().submit(_unsplit, first)
    try:
        second_result = _unsplit(second)
    finally:
        future.exception()  # first has finished before anything is raised or returned
    return future.result(), second_result


def pool():
    """The threads that run blocks besides the calling one (threads() - 1 of them)."""
    global _pool
    if _pool is None:
        _pool = ThreadPoolExecutor(threads() - 1, thread_name_prefix="tinygan")
    return _pool


def _unsplit(task, *args):
    """task(*args) with nothing inside it split again (one block, or one of two tasks)."""
    _worker.busy = True
    try:
        return task(*args)
    finally:
        _worker.busy = False


def matmul(a, b, out=None):
    """a @ b, written into ``out`` (a new array when None), b's columns (and out's) split
    over the threads.

    Column j of a @ b is a @ b[:, j], so the blocks of columns are independent products.
    """
    if out is None:
        out = xp.empty((a.shape[0], b.shape[1]), dtype=xp.result_type(a, b))
    work = out.size * a.shape[1] // BLAS_SPEEDUP
    if split_count(work) == 1:
        return xp.matmul(a, b, out=out)
    run(lambda s: xp.matmul(a, b[:, s], out=out[:, s]), b.shape[1], work)
    return out


def matmul_sum(a, b):
    """a @ b as a sum over blocks of the inner dimension: sum_k a[:, k] b[k, :].

    For products whose inner dimension is the long one (a weight gradient sums over
    every pixel of the batch): each thread multiplies one block of k, then the partial
    products, each as small as the result, are added in the blocks' order (so the
    rounding is the same from run to run).
    """
    partials = {}

    def part(k):
        partials[k.start] = a[:, k] @ b[k]

    run(part, a.shape[1], a.size * b.shape[1] // BLAS_SPEEDUP)
    first, *rest = (partials[start] for start in sorted(partials))
    for partial in rest:
        first += partial
    return first


def elementwise(part, *arrays):
    """Call ``part(*blocks)`` on matching blocks of same-shaped arrays, one block per thread.

    The blocks are cut along the axis that is outermost in the first array's memory
    (the channel axis of a batch-last (N, C, H, W) array, the batch axis of a C-ordered
    one), so that each block is one run of memory (of whole rows, with the gaps between
    them, for the arrays of tinygan.nn.conv.rows_apart).
    """
    first = arrays[0]
    if first.ndim == 0 or split_count(first.size) == 1:
        part(*arrays)
        return
    axis = max(range(first.ndim), key=lambda a: abs(first.strides[a]) * (first.shape[a] > 1))
    before = (slice(None),) * axis
    run(lambda s: part(*(array[before + (s,)] for array in arrays)), first.shape[axis],
        first.size)
