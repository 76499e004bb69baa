"""Peak memory of a DCGAN training run: tinygan against PyTorch, each in its own process.

The worker builds the model, records its peak resident set size (ru_maxrss) after
the imports and the build, runs a few full training steps, and records the peak
again. The table gives both peaks and their difference (what training itself added).
On CuPy it also reports the GPU memory in use, as the host RSS is not where the arrays
live: the most, over the steps, of what the device reports used (cudaMemGetInfo: total
less free, after each step), taken the same way for both programs, so that pools, cuBLAS
and cuDNN workspaces and the CUDA context count alike.

    python benchmarks/bench_memory.py                  # batch 256, 1 thread
    python benchmarks/bench_memory.py --batch 64 256 --steps 10
"""

import argparse
import json
import resource
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import common  # noqa: E402

SCRIPT = Path(__file__).resolve()


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def worker(spec):
    common.start_worker(spec)
    import numpy as np

    batch, model = spec["batch"], spec["model"]
    host = np.random.default_rng(0).uniform(-1, 1, (batch, 1, 28, 28)).astype(np.float32)
    gpu = spec["backend"] == "cupy"
    if spec["impl"] == "torch":
        import torch

        from benchmarks.peers import TorchTrainer

        trainer = TorchTrainer(model, device="cuda" if gpu else "cpu")
        real = torch.from_numpy(host).to("cuda" if gpu else "cpu")

        def device_bytes():
            free, total = torch.cuda.mem_get_info()
            return total - free
    else:
        from tinygan import backend
        from tinygan.models import build
        from tinygan.train import Trainer

        trainer = Trainer(build(model, (1, 28, 28)))
        real = backend.to_device(host)

        def device_bytes():
            import cupy

            free, total = cupy.cuda.runtime.memGetInfo()
            return total - free
    before, sync, device_peak = peak_rss_mb(), common.synchronizer(spec), 0
    for _ in range(spec["steps"]):
        trainer.step(real)
        sync()
        if gpu:
            device_peak = max(device_peak, device_bytes())
    reply = {"rss_before_mb": before, "rss_peak_mb": peak_rss_mb()}
    if gpu:
        reply["device_mb"] = device_peak / 2**20
    common.reply(reply)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    common.add_common_arguments(parser, batch=(256,))
    parser.set_defaults(threads=[1], rounds=3)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--model", default="dcgan", choices=["dcgan", "gan"])
    args = parser.parse_args(argv)
    if args.worker:
        return worker(json.loads(args.worker))
    programs = common.programs(args)
    with_torch = "torch" in programs
    results, rows = [], []
    for batch in args.batch:
        for t in args.threads:
            specs = [dict(impl=p, model=args.model, batch=batch, backend=args.backend,
                          steps=args.steps, threading=args.threading) for p in programs]
            replies = common.alternate(SCRIPT, specs, t, args.rounds)
            entry = dict(model=args.model, batch=batch, threads=t, backend=args.backend,
                         threading=args.threading)
            for p, rs in zip(programs, replies):
                peak = common.stats([r["rss_peak_mb"] for r in rs])["median"]
                base = common.stats([r["rss_before_mb"] for r in rs])["median"]
                entry[p] = {"peak_mb": peak, "before_mb": base, "training_mb": peak - base}
                if "device_mb" in rs[0]:
                    entry[p]["device_mb"] = common.stats([r["device_mb"] for r in rs])["median"]
                rows.append([args.model, batch, t, p, f"{base:.0f}", f"{peak:.0f}",
                             f"{peak - base:.0f}", f"{entry[p].get('device_mb', 0):.0f}"])
            if with_torch:
                entry["peak_ratio"] = entry["tinygan"]["peak_mb"] / entry["torch"]["peak_mb"]
                entry["training_ratio"] = (entry["tinygan"]["training_mb"]
                                           / max(entry["torch"]["training_mb"], 1e-9))
                rows.append(["", "", "", "tinygan / torch", "",
                             f"{entry['peak_ratio']:.2f}", f"{entry['training_ratio']:.2f}", ""])
            results.append(entry)
    print(f"peak memory, {args.model}, {args.steps} training steps, median of {args.rounds} runs:")
    common.print_table(["model", "batch", "thr", "program", "after build MB", "peak RSS MB",
                        "added by training MB", "GPU pool MB"], rows)
    common.write_json(args.json, {"benchmark": "memory", "results": results})
    return results


if __name__ == "__main__":
    main()
