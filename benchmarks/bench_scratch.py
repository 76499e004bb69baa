"""tinygan's Conv2d and ConvTranspose2d against the from-scratch NumPy peer, same machine.

The issue's bar: on input (64, 64, 14, 14) -> 128 channels, k4 s2 p1, forward + backward,
one thread, tinygan at least 8x faster than the well-known from-scratch NumPy code
(benchmarks/scratch_peer.py: fancy-index im2col, np.add.at col2im, NCHW). Both run here,
each in its own process, alternating run by run; the table shows the medians over runs
and peer / tinygan as a ratio of medians (min-max of the per-round ratios).

    python benchmarks/bench_scratch.py                # 1 thread, 3 rounds
    python benchmarks/bench_scratch.py --threads 1 2 --rounds 5 --json scratch.json

The peer is NumPy code, so this runs on the CPU only, whatever the backend.
"""

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import common  # noqa: E402
from benchmarks.bench_gemm import LAYERS  # noqa: E402
from benchmarks.bench_layers import adaptive_times, make_layer  # noqa: E402

SCRIPT = Path(__file__).resolve()
PEER_LAYERS = ("peer conv (64,64,14,14)->128", "peer convT (64,64,14,14)->128")
TARGET = 8  # the peer's time over tinygan's, at least


def make_peer(spec):
    """forward + backward of the from-scratch peer on the spec's layer, as a closure."""
    import numpy as np

    from benchmarks import scratch_peer

    cls, cin, cout, size, fixed = LAYERS[spec["layer"]]
    n = fixed or spec["batch"]
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, cin, size, size)).astype(np.float32)
    shape = (cout, cin, 4, 4) if cls == "Conv2d" else (cin, cout, 4, 4)
    weight = (rng.standard_normal(shape) * 0.05).astype(np.float32)
    layer = getattr(scratch_peer, cls)(weight, np.zeros(cout, np.float32), 2, 1)
    g = rng.standard_normal(layer.forward(x).shape).astype(np.float32)

    def forward_backward():
        layer.forward(x)
        layer.backward(g)

    return forward_backward


def worker(spec):
    common.start_worker(spec)  # tinygan on NumPy: the backend the spec names
    if spec["impl"] == "scratch":
        forward_backward = make_peer(spec)
    else:
        forward_backward = make_layer(spec)[1]
    common.reply({"forward_backward": statistics.median(
        adaptive_times(forward_backward, lambda: None))})


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1],
                        help="CPU thread counts to measure (each in its own processes)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="runs per program; programs alternate run by run")
    parser.add_argument("--layers", nargs="+", default=list(PEER_LAYERS), choices=list(LAYERS),
                        metavar="LAYER")
    parser.add_argument("--batch", type=int, default=64,
                        help="batch of the DCGAN layers (the peers' shape has its own, 64)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(json.loads(args.worker))
    common.print_machine()
    results, rows = [], []
    for t in args.threads:
        for name in args.layers:
            specs = [dict(impl=p, layer=name, batch=args.batch, backend="numpy")
                     for p in ("tinygan", "scratch")]
            ours, peer = ([r["forward_backward"] for r in rs]
                          for rs in common.alternate(SCRIPT, specs, t, args.rounds))
            speedup = common.ratio_stats(peer, ours)
            results.append(dict(layer=name, batch=LAYERS[name][4] or args.batch, threads=t,
                                tinygan=common.stats(ours), scratch=common.stats(peer),
                                speedup=speedup, target=TARGET,
                                met=speedup["median"] >= TARGET))
            rows.append([name, results[-1]["batch"], t, common.fmt_ms(statistics.median(ours)),
                         common.fmt_ms(statistics.median(peer)), common.fmt_ratio(speedup),
                         "yes" if results[-1]["met"] else "no"])
    print("forward + backward, tinygan against the from-scratch NumPy peer:")
    common.print_table(["layer", "batch", "thr", "tinygan ms", "from-scratch ms",
                        "peer / tinygan", f">= {TARGET}x"], rows)
    common.write_json(args.json, {"benchmark": "scratch", "results": results})
    return results


if __name__ == "__main__":
    main()
