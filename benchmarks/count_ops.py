"""Array operations per training step: on CuPy each one is a GPU kernel launch.

On a GPU a DCGAN step at batch 256 takes a few milliseconds, and CuPy spends some
microseconds of Python per operation it launches, so the number of operations can bound the
step time as much as the arithmetic does. This counts them without a GPU: the step runs on
the test suite's CuPy stand-in (tests/cupy_stand_in, NumPy underneath), where every
operation is a Python call that can be seen, and each is charged to the tinygan function
that issued it. Views (reshape, transpose, slicing) launch nothing and are not counted;
nor are allocations with ``empty`` (CuPy takes them from its memory pool, launching nothing).

    python benchmarks/count_ops.py                      # dcgan and gan, batch 256
    python benchmarks/count_ops.py --models dcgan --batch 64 --top 10 --json ops.json
"""

import argparse
import collections
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STAND_IN = ROOT / "tests" / "cupy_stand_in"
PACKAGE = str(ROOT / "tinygan") + os.sep
STAND_IN_FILES = str(STAND_IN) + os.sep
# the stand-in's entry points that compute something: an elementwise kernel, a copy into a
# slice (__setitem__), a cupy.<function> call, an ndarray method (sum, mean, ...), a ufunc or
# a fused kernel called (__call__), a device copy (convert: ascontiguousarray and the like),
# random numbers drawn
COUNTED = {"_ufunc_call", "__setitem__", "call", "method", "fill", "copy", "astype", "__call__",
           "convert", "random", "standard_normal", "standard_exponential", "integers", "uniform"}
UNLAUNCHED = {"empty", "empty_like"}


def stand_in():
    """Put the CuPy stand-in first on the path and tinygan on it; return the stand-in."""
    sys.path[:0] = [str(STAND_IN), str(ROOT)]
    os.environ["TINYGAN_BACKEND"] = "cupy"
    import cupy

    if not getattr(cupy, "_FAKE", False):
        raise SystemExit("count_ops.py counts on the CuPy stand-in, but a real CuPy was "
                         "imported first")
    return cupy


def launches(frame, value):
    """Whether the stand-in call returning ``value`` from ``frame`` launches a kernel on CuPy."""
    local = frame.f_locals
    name = frame.f_code.co_name
    if getattr(local.get("f"), "__name__", None) in UNLAUNCHED:
        return False
    if name == "astype" and value is local.get("self"):  # already that dtype, copy=False
        return False
    if name == "convert":  # a device array handed back as it is, or a host array uploaded
        return type(local.get("a")).__name__ == "ndarray" and value is not local.get("a")
    if name == "__setitem__" and hasattr(local.get("value"), "__array_interface__"):
        # a[k] += b writes a[k]'s own memory back into it: CuPy skips that copy
        target, written = local["self"]._a[local["key"]], local["value"]
        return (target.__array_interface__["data"][0], target.shape, target.strides) != (
            written.__array_interface__["data"][0], written.shape, written.strides)
    return True


def count_calls(fn):
    """Run fn(); return (total, {tinygan file:function: count}) of the kernels it launched."""
    by_caller = collections.Counter()

    def on_return(frame, event, value):  # at the return, a wrapper's locals hold its function
        if event != "return" or frame.f_code.co_name not in COUNTED:
            return
        if not frame.f_code.co_filename.startswith(STAND_IN_FILES):
            return
        caller = frame.f_back  # an operation that the stand-in issues for another is one
        while caller is not None and caller.f_code.co_filename.startswith(STAND_IN_FILES):
            if caller.f_code.co_name in COUNTED:
                return
            caller = caller.f_back
        if not launches(frame, value):
            return
        while caller is not None and not caller.f_code.co_filename.startswith(PACKAGE):
            caller = caller.f_back
        where = "(outside tinygan)"
        if caller is not None:
            path = Path(caller.f_code.co_filename).relative_to(PACKAGE)
            where = f"{path}:{caller.f_code.co_name}"
        by_caller[where] += 1

    sys.setprofile(on_return)
    try:
        fn()
    finally:
        sys.setprofile(None)
    return sum(by_caller.values()), dict(by_caller.most_common())


def count_step(model, batch, fused=True):
    """count_calls of one Trainer.step after two warm-up steps; ``fused=False`` counts the
    readable code in place of tinygan.kernels'."""
    import cupy
    import numpy as np

    from tinygan import kernels
    from tinygan.models import build
    from tinygan.train import Trainer

    kernels.ENABLED = fused
    trainer = Trainer(build(model, (1, 28, 28)))
    images = np.random.default_rng(0).uniform(-1, 1, (batch, 1, 28, 28)).astype(np.float32)
    real = cupy.asarray(images)
    for _ in range(2):  # the first steps allocate optimizer state and caches
        trainer.step(real)
    return count_calls(lambda: trainer.step(real))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["dcgan", "gan"], choices=["dcgan", "gan"])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--top", type=int, default=8, help="callers listed per model")
    parser.add_argument("--unfused", action="store_true",
                        help="count the readable code where tinygan.kernels has a fused kernel")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    stand_in()
    results = []
    for model in args.models:
        total, by_caller = count_step(model, args.batch, fused=not args.unfused)
        results.append({"model": model, "batch": args.batch, "fused": not args.unfused,
                        "operations": total, "by_caller": by_caller})
        kind = "unfused, " if args.unfused else ""
        print(f"{model}, batch {args.batch}, {kind}{total} array operations per training step")
        for where, count in list(by_caller.items())[:args.top]:
            print(f"  {count:5d}  {where}")
    if args.json:
        import json

        args.json.write_text(json.dumps({"benchmark": "count_ops", "results": results},
                                        indent=1) + "\n")
    return results


if __name__ == "__main__":
    main()
