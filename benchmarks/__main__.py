"""Run every benchmark with its defaults: ``python -m benchmarks [--quick] [--backend cupy]``.

GEMM rate, per-layer timings, full training steps, peak memory, and on NumPy the
from-scratch peer, in that order; each prints its table. ``--quick`` uses 2 runs per
program instead of the scripts' defaults (5; the peer's 3) and batch 64 only (peak memory:
one run, at its batch of 256).
``--out DIR`` also writes each benchmark's JSON there, and the step-time plot.
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import (  # noqa: E402
    bench_gemm,
    bench_layers,
    bench_memory,
    bench_scratch,
    bench_step,
)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--backend", choices=("numpy", "cupy"), default="numpy")
    parser.add_argument("--out", type=Path, help="folder for the JSON results and the plot")
    args = parser.parse_args(argv)
    common = ["--backend", args.backend]
    if args.quick:
        common += ["--rounds", "2"]
    batches = ["--batch", "64"] if args.quick else []

    def out(name):
        if not args.out:
            return []
        args.out.mkdir(parents=True, exist_ok=True)
        return ["--json", str(args.out / f"{name}.json")]

    print("== float32 matrix-product rate ==")
    bench_gemm.main(common + batches + out("gemm"))
    print("== layers ==")
    bench_layers.main(common + batches + out("layers"))
    print("== training steps ==")
    bench_step.main(common + batches + out("step"))
    print("== peak memory ==")
    bench_memory.main(common + (["--rounds", "1"] if args.quick else []) + out("memory"))
    if args.backend == "numpy":  # the peer is NumPy code: a CPU comparison only
        print("== the from-scratch NumPy peer ==")
        bench_scratch.main((["--rounds", "2"] if args.quick else []) + out("scratch"))
    if args.out:
        from benchmarks import plot_results

        plot_results.main([str(args.out / "step_time.png"), str(args.out / "step.json")])


if __name__ == "__main__":
    main()
