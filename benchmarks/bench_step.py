"""Full GAN training steps: tinygan (models.build + train.Trainer) against PyTorch.

One step = one D update on a real and a fake batch + one G update through a frozen D,
with Adam; for PyTorch the same networks and a hand-written step (benchmarks/peers.py).
Random [-1, 1] images stand in for MNIST (the data does not change the work).

    python benchmarks/bench_step.py       # dcgan and gan, batch 64 and 256, 1 and 2 threads
    python benchmarks/bench_step.py --models dcgan --batch 16 32 64 128 256 --json step.json
    python benchmarks/bench_step.py --backend cupy   # on the GPU (torch on cuda), and NumPy
                                                     # on the same host for the speed-up

Each (program, model, batch, threads) runs in its own process, programs alternating
run by run; a run's time is the median of its timed steps, and the table shows the
median over runs with [min-max] and tinygan / torch as ratio of medians (min-max of
the per-round ratios).
"""

import argparse
import json
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import common  # noqa: E402

SCRIPT = Path(__file__).resolve()


GPU_WARMUP_S = 2.0  # a GPU's clocks take a moment to settle: warm up for seconds there
GPU_TIMED_S = 1.0  # and time at least this long (a step takes milliseconds)


def steps_for(batch):
    """Timed steps per run: ~1300 images' worth, at least 4."""
    return max(4, 1280 // batch)


def warm_up(step, spec, sync):
    """``spec["warmup"]`` steps; on a GPU, steps for GPU_WARMUP_S seconds at least. Returns
    how many steps to time: spec["steps"], or on a GPU enough to fill GPU_TIMED_S."""
    common.time_calls(step, 0, spec["warmup"], sync)
    if spec["backend"] != "cupy":
        return spec["steps"]
    start, done = time.perf_counter(), 0
    while time.perf_counter() - start < GPU_WARMUP_S:
        step()
        sync()
        done += 1
    seconds_per_step = (time.perf_counter() - start) / done
    return max(spec["steps"], int(GPU_TIMED_S / seconds_per_step))


def worker(spec):
    common.start_worker(spec)
    import numpy as np

    batch, model = spec["batch"], spec["model"]
    host = np.random.default_rng(0).uniform(-1, 1, (batch, 1, 28, 28)).astype(np.float32)
    if spec["impl"] == "torch":
        import torch

        from benchmarks.peers import TorchTrainer

        device = "cuda" if spec["backend"] == "cupy" else "cpu"
        trainer = TorchTrainer(model, device=device)
        real = torch.from_numpy(host).to(device)
    else:
        from tinygan import backend
        from tinygan.models import build
        from tinygan.train import Trainer

        trainer = Trainer(build(model, (1, 28, 28)))
        real = backend.to_device(host)
    sync = common.synchronizer(spec)
    steps = warm_up(lambda: trainer.step(real), spec, sync)
    before = resource.getrusage(resource.RUSAGE_SELF)
    times = common.time_calls(lambda: trainer.step(real), steps, 0, sync)
    after = resource.getrusage(resource.RUSAGE_SELF)
    # page faults and kernel time per timed step: what the C allocator costs each program
    common.reply({"times": times, "median": float(np.median(times)),
                  "minor_faults_per_step": (after.ru_minflt - before.ru_minflt) / len(times),
                  "kernel_seconds_per_step": (after.ru_stime - before.ru_stime) / len(times)})


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    common.add_common_arguments(parser)
    parser.add_argument("--models", nargs="+", default=["dcgan", "gan"], choices=["dcgan", "gan"])
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--numpy-threads", type=int, default=common.usable_cores(),
                        help="with --backend cupy: BLAS threads of the NumPy run on the same "
                             "host that the GPU's speed-up is measured against (default: "
                             "every core)")
    args = parser.parse_args(argv)
    if args.worker:
        return worker(json.loads(args.worker))
    programs = common.programs(args)
    with_torch = "torch" in programs
    on_gpu = args.backend == "cupy"
    if on_gpu:  # the GPU target is a speed-up over NumPy on the same machine
        programs.append("numpy")
    threads = common.thread_counts(args)
    results, rows = [], []
    for model in args.models:
        for batch in args.batch:
            for t in threads:
                specs = [dict(impl=p, model=model, batch=batch, backend=args.backend,
                              steps=steps_for(batch), warmup=args.warmup,
                              threading=args.threading) for p in programs]
                if on_gpu:  # tinygan again, on the host's CPU cores
                    specs[-1].update(impl="tinygan", backend="numpy", threads=args.numpy_threads)
                replies = common.alternate(SCRIPT, specs, t, args.rounds)
                runs = {p: [r["median"] for r in rs] for p, rs in zip(programs, replies)}
                faults = {p: [r["minor_faults_per_step"] for r in rs]
                          for p, rs in zip(programs, replies)}
                kernel = {p: [r["kernel_seconds_per_step"] for r in rs]
                          for p, rs in zip(programs, replies)}
                entry = dict(model=model, batch=batch, threads=t, backend=args.backend,
                             threading=args.threading, runs=runs,
                             stats={p: common.stats(v) for p, v in runs.items()},
                             minor_faults_per_step=faults, kernel_seconds_per_step=kernel)
                if on_gpu:
                    entry["numpy_threads"] = args.numpy_threads
                row = [model, batch, t]
                for p in programs:
                    s = entry["stats"][p]
                    row.append(f"{1000 * s['median']:.1f} [{1000 * s['min']:.1f}-"
                               f"{1000 * s['max']:.1f}]")
                if with_torch:
                    entry["ratio"] = common.ratio_stats(runs["tinygan"], runs["torch"])
                    row.append(common.fmt_ratio(entry["ratio"]))
                if on_gpu:
                    entry["speedup_over_numpy"] = common.ratio_stats(runs["numpy"],
                                                                     runs["tinygan"])
                    row.append(common.fmt_ratio(entry["speedup_over_numpy"]))
                results.append(entry)
                rows.append(row)
                print(f"  {model} batch {batch} threads {t}: {row[3:]}", flush=True)
    headers = ["model", "batch", "threads", f"tinygan/{args.backend} ms"]
    if with_torch:
        headers += ["torch ms"]
    if on_gpu:
        headers += [f"tinygan/numpy ({args.numpy_threads} threads) ms"]
    if with_torch:
        headers += ["tinygan / torch"]
    if on_gpu:
        headers += ["numpy / cupy"]
    print()
    common.print_table(headers, rows)
    common.write_json(args.json, {"benchmark": "step", "results": results})
    return results


if __name__ == "__main__":
    main()
