"""The machine's float32 matrix-product rate, on the products the conv layers issue.

A Conv2d / ConvTranspose2d forward + backward is three matrix products (forward,
weight gradient, input gradient; see tinygan/nn/conv.py), with one operand sometimes
a transposed view. This script times exactly those products (same shapes, the same
operands transposed, the result new or written into a reused buffer as the layers do)
for the DCGAN's layers, plus a 1024^3 product as a plain reference, and prints GFLOP/s.
Every matrix, weights included, has its rows a little more than their length apart
(``tinygan.nn.conv.rows_apart``, as the layers allocate their own): at batch 256
contiguous rows lie an exact multiple of 4096 bytes apart and some of these products
then take twice as long, which would flatter every layer compared with them. (The
layers' weights and the gradients they receive are plain contiguous arrays.)

    python benchmarks/bench_gemm.py                 # batch 64 and 256, 1 and 2 threads
    python benchmarks/bench_gemm.py --backend cupy  # the GPU's rate (cupy.matmul)

bench_layers.py uses ``layer_gemms`` and ``time_gemms`` to put each layer's time next
to the time of its own three products.
"""

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import common  # noqa: E402

SCRIPT = Path(__file__).resolve()

# name -> (class, in_channels, out_channels, input size, fixed batch or None); k4 s2 p1
LAYERS = {
    "D conv 1->64 28->14": ("Conv2d", 1, 64, 28, None),
    "D conv 64->128 14->7": ("Conv2d", 64, 128, 14, None),
    "G convT 128->64 7->14": ("ConvTranspose2d", 128, 64, 7, None),
    "G convT 64->1 14->28": ("ConvTranspose2d", 64, 1, 14, None),
    # the from-scratch peers' shape: input (64, 64, 14, 14) -> 128 channels, k4 s2 p1
    "peer conv (64,64,14,14)->128": ("Conv2d", 64, 128, 14, 64),
    "peer convT (64,64,14,14)->128": ("ConvTranspose2d", 64, 128, 14, 64),
}
# Layers whose input, inside the DCGAN, is the output of another tinygan conv (through
# elementwise layers), and so arrives in the batch-last layout (see tinygan/nn/conv.py).
BATCH_LAST_INPUT = {"D conv 64->128 14->7", "G convT 64->1 14->28"}
MIRRORS = {  # a ConvTranspose2d and the Conv2d it is the adjoint of
    "G convT 128->64 7->14": "D conv 64->128 14->7",
    "G convT 64->1 14->28": "D conv 1->64 28->14",
}


def layer_gemms(name, batch):
    """The three products of the layer's forward + backward:
    (label, m, k, n, a_t, b_t, into_scratch).

    (m, k) @ (k, n); a_t / b_t: that operand is a transposed view (in time_gemms, of a
    rows_apart array);
    into_scratch: the layer writes that product into a reused buffer (``matmul(out=)``,
    the columns that col2im consumes), the others into a new array, as the layer does.
    Conv2d, P = Ho*Wo*N, K = C*kh*kw: out = W2 @ cols, dW = G2 @ cols^T, dcols = W2^T @ G2,
    the first two with K + 1 (the bias is W2's last column, on a row of ones in cols).
    ConvTranspose2d, P = H*W*N, K = C_out*kh*kw: cols = W2^T @ x2, dW = x2 @ dcols^T,
    dx = W2 @ dcols.
    """
    cls, cin, cout, size, fixed = LAYERS[name]
    n = fixed or batch
    if cls == "Conv2d":
        out = size // 2
        p, k, f = out * out * n, cin * 16, cout
        return [("fwd", f, k + 1, p, False, False, False), ("dW", f, p, k + 1, False, True, False),
                ("dX", k, f, p, True, False, True)]
    p, k = size * size * n, cout * 16
    return [("fwd", k, cin, p, True, False, True), ("dW", cin, p, k, False, True, False),
            ("dX", cin, k, p, False, False, False)]


def time_gemms(gemms, xp, sync, target_seconds=0.3):
    """Median seconds of each product; returns [(label, m, k, n, seconds, gflops)]."""
    import statistics

    from tinygan.nn.conv import rows_apart

    out = []
    rng = xp.random.default_rng(0)

    def matrix(shape):  # rows never a multiple of 4096 bytes apart, as the layers' own
        array = rows_apart(shape, xp.float32)
        array[...] = rng.random(shape, dtype=xp.float32)
        return array

    for label, m, k, n, a_t, b_t, into_scratch in gemms:
        a = matrix((k, m)).T if a_t else matrix((m, k))
        b = matrix((n, k)).T if b_t else matrix((k, n))
        buffer = rows_apart((m, n), xp.float32) if into_scratch else None

        def product(a=a, b=b, buffer=buffer):  # into a fresh result, or the reused buffer
            result = rows_apart((a.shape[0], b.shape[1]), xp.float32) if buffer is None else buffer
            return xp.matmul(a, b, out=result)

        first = common.time_calls(product, 1, 1, sync)[0]
        repeats = int(min(200, max(5, target_seconds / max(first, 1e-6))))
        times = common.time_calls(product, repeats, 1, sync)
        seconds = statistics.median(times)
        out.append((label, m, k, n, seconds, 2 * m * k * n / seconds / 1e9))
    return out


def worker(spec):
    common.start_worker(spec)
    from tinygan.backend import xp

    sync = common.synchronizer(spec)
    rows = []
    reference = time_gemms([("1024^3", 1024, 1024, 1024, False, False, False)], xp, sync)
    rows += [("reference",) + r for r in reference]
    for name in LAYERS:
        for r in time_gemms(layer_gemms(name, spec["batch"]), xp, sync):
            rows.append((name,) + r)
    common.reply({"rows": rows})


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    common.add_common_arguments(parser)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(json.loads(args.worker))
    common.check_backend(args.backend)
    common.print_machine()
    threads = common.thread_counts(args)
    results = []
    for t in threads:
        for batch in args.batch:
            spec = dict(impl="tinygan", backend=args.backend, batch=batch)
            runs = common.alternate(SCRIPT, [spec], t, args.rounds)[0]
            table = []
            for i, row in enumerate(runs[0]["rows"]):
                rates = [run["rows"][i][6] for run in runs]
                st = common.stats(rates)
                name, label, m, k, n = row[:5]
                results.append(dict(threads=t, batch=batch, layer=name, gemm=label, m=m, k=k,
                                    n=n, gflops=st))
                table.append([name, label, f"{m}x{k}x{n}",
                              f"{st['median']:.1f} [{st['min']:.1f}-{st['max']:.1f}]"])
            print(f"float32 matrix products, {args.backend}, batch {batch}, {t} thread(s):")
            common.print_table(["layer", "product", "m x k x n", "GFLOP/s"], table)
    common.write_json(args.json, {"benchmark": "gemm", "results": results})
    return results


if __name__ == "__main__":
    main()
