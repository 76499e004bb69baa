"""Per-layer timings: Conv2d and ConvTranspose2d forward + backward on the DCGAN shapes
and on the from-scratch peers' shape, against the layer's own matrix products and
against PyTorch.

Inputs and upstream gradients come in the memory layout they have inside the DCGAN:
images and the generator's reshaped Dense output as plain (N, C, H, W) arrays, the
rest as the elementwise layers around a convolution hand them over (PyTorch: its
default contiguous NCHW everywhere): on NumPy the batch-last views tinygan's layers
pass along, on CuPy the C-order arrays its elementwise kernels write. The peers' shape
gets a plain (N, C, H, W) input. (D's first layer also sees G's fakes, batch-last on
NumPy; it is timed on real images only.)

For every layer a worker times forward alone and forward + backward (weight, bias
and input gradients), and another, taking turns with it, the three float32 matrix
products the layer issues (benchmarks/bench_gemm.py), with BLAS on every thread.
"GEMM share" is (time of those products) / (time of the layer): the fraction of the
machine's measured matrix-product rate, on these very shapes, that the whole layer
reaches. "vs mirror" is a ConvTranspose2d's
time over that of the Conv2d it is the adjoint of.

    python benchmarks/bench_layers.py                      # batch 64 and 256, 1 and 2 threads
    python benchmarks/bench_layers.py --threads 1 --batch 64
    python benchmarks/bench_layers.py --backend cupy
"""

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import common  # noqa: E402
from benchmarks.bench_gemm import (  # noqa: E402
    BATCH_LAST_INPUT,
    LAYERS,
    MIRRORS,
    layer_gemms,
    time_gemms,
)

SCRIPT = Path(__file__).resolve()


def adaptive_times(fn, sync, target_seconds=1.0):
    first = common.time_calls(fn, 1, 1, sync)[0]
    repeats = int(min(100, max(5, target_seconds / max(first, 1e-6))))
    return common.time_calls(fn, repeats, 1, sync)


def make_layer(spec):
    """(forward, forward+backward) closures for the layer in the spec."""
    import numpy as np

    cls, cin, cout, size, fixed = LAYERS[spec["layer"]]
    n = fixed or spec["batch"]
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, cin, size, size)).astype(np.float32)
    if spec["impl"] == "torch":
        import torch

        device = "cuda" if spec["backend"] == "cupy" else "cpu"
        layer = getattr(torch.nn, cls)(cin, cout, 4, 2, 1).to(device)
        xt = torch.from_numpy(x).to(device).requires_grad_(True)
        g = torch.randn_like(layer(xt))

        def forward():
            with torch.no_grad():
                return layer(xt)

        def forward_backward():
            layer.zero_grad(set_to_none=False)
            xt.grad = None
            layer(xt).backward(g)

        return forward, forward_backward
    from tinygan import backend, nn

    layer = getattr(nn, cls)(cin, cout, 4, 2, 1)
    xd = backend.to_device(x)
    one = np.float32(1)
    if spec["layer"] in BATCH_LAST_INPUT:  # a conv's output through an elementwise layer
        xd = nn.conv.to_nchw(nn.conv.to_chwn(xd)) * one
    # the upstream gradient as the next (elementwise) layer's backward returns it
    g = layer.forward(xd) * one
    g[...] = backend.rng().standard_normal(g.shape, dtype=np.float32)

    def forward_backward():
        layer.zero_grad()
        layer.forward(xd)
        layer.backward(g)

    return (lambda: layer.forward(xd)), forward_backward


def worker(spec):
    common.start_worker(spec)
    sync = common.synchronizer(spec)
    if spec["impl"] == "gemm":  # the layer's products alone, BLAS on every thread
        from tinygan.backend import xp

        gemms = time_gemms(layer_gemms(spec["layer"], spec["batch"]), xp, sync)
        return common.reply({"gemms": gemms, "gemm_seconds": sum(r[4] for r in gemms)})
    forward, forward_backward = make_layer(spec)
    reply = {"forward": statistics.median(adaptive_times(forward, sync)),
             "forward_backward": statistics.median(adaptive_times(forward_backward, sync))}
    common.reply(reply)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    common.add_common_arguments(parser)
    parser.add_argument("--layers", nargs="+", default=list(LAYERS), choices=list(LAYERS),
                        metavar="LAYER")
    args = parser.parse_args(argv)
    if args.worker:
        return worker(json.loads(args.worker))
    programs = common.programs(args)
    with_torch = "torch" in programs
    threads = common.thread_counts(args)
    # a ConvTranspose2d after the Conv2d it mirrors, whatever the order asked for
    layers = sorted(args.layers, key=lambda name: name in MIRRORS)
    results = []
    for t in threads:
        for batch in args.batch:
            rows, by_layer = [], {}
            for name in layers:
                if LAYERS[name][4] and batch != args.batch[0]:
                    continue  # fixed-batch peer shapes: measure once per thread count
                specs = [dict(impl=p, layer=name, batch=batch, backend=args.backend,
                              threading=args.threading) for p in programs + ["gemm"]]
                replies = common.alternate(SCRIPT, specs, t, args.rounds)
                ours = replies[0]
                fb = [r["forward_backward"] for r in ours]
                gemm_seconds = [r["gemm_seconds"] for r in replies[-1]]
                entry = dict(layer=name, batch=LAYERS[name][4] or batch, threads=t,
                             backend=args.backend, threading=args.threading,
                             forward=common.stats([r["forward"] for r in ours]),
                             forward_backward=common.stats(fb),
                             gemm_seconds=common.stats(gemm_seconds),
                             gemm_share=common.ratio_stats(gemm_seconds, fb))
                by_layer[name] = fb
                row = [name, entry["batch"], t, common.fmt_ms(entry["forward"]["median"]),
                       common.fmt_ms(entry["forward_backward"]["median"]),
                       common.fmt_ms(entry["gemm_seconds"]["median"]),
                       f"{100 * entry['gemm_share']['median']:.0f}% "
                       f"({100 * entry['gemm_share']['min']:.0f}-"
                       f"{100 * entry['gemm_share']['max']:.0f})"]
                mirror = MIRRORS.get(name)
                if mirror in by_layer:
                    entry["vs_mirror"] = common.ratio_stats(fb, by_layer[mirror])
                    row.append(common.fmt_ratio(entry["vs_mirror"]))
                else:
                    row.append("")
                if with_torch:
                    theirs = [r["forward_backward"] for r in replies[1]]
                    entry["torch_forward"] = common.stats([r["forward"] for r in replies[1]])
                    entry["torch_forward_backward"] = common.stats(theirs)
                    entry["ratio"] = common.ratio_stats(fb, theirs)
                    row += [common.fmt_ms(statistics.median(theirs)),
                            common.fmt_ratio(entry["ratio"])]
                results.append(entry)
                rows.append(row)
            headers = ["layer", "batch", "thr", "fwd ms", "fwd+bwd ms", "its GEMMs ms",
                       "GEMM share", "vs mirror"]
            if with_torch:
                headers += ["torch fwd+bwd ms", "tinygan / torch"]
            print(f"layers, {args.backend}, batch {batch}, {t} thread(s):")
            common.print_table(headers, rows)
    common.write_json(args.json, {"benchmark": "layers", "results": results})
    return results


if __name__ == "__main__":
    main()
