"""Plot training-step time against batch size from bench_step.py --json files.

    python benchmarks/bench_step.py --batch 16 32 64 128 256 --json step.json
    python benchmarks/plot_results.py step_time.png step.json [more.json ...] [--threads 1]

One panel per model; one line per (program, threads) and, when several files are
given (say, NumPy with two OpenBLAS kernel choices), per file for tinygan (PyTorch is
drawn from the first file that has it with its instruction set, so a PyTorch held to AVX2
gets a line of its own). Markers at the median over runs, bars from the
fastest to the slowest run.
"""

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def series_of(payloads, threads_filter):
    """[(label, style, model, threads, [(batch, stats)])] across the files."""
    out, torch_from, settings_seen = [], {}, set()  # torch_from: line -> the file drawing it
    for i, payload in enumerate(payloads):
        machine = payload.get("machine", {})
        kernels = machine.get("openblas_kernels")
        torch_isa = machine.get("torch_cpu_kernels") or machine.get("ATEN_CPU_CAPABILITY")
        # a file with the same settings as an earlier one: tell its lines apart by its date
        settings = (kernels, tuple(sorted({r.get("backend") for r in payload["results"]})))
        when = f", {payload.get('when', f'file {i + 1}')}" if settings in settings_seen else ""
        settings_seen.add(settings)
        for r in payload["results"]:
            if threads_filter and r["threads"] not in threads_filter:
                continue
            for program, st in r["stats"].items():
                gpu = r.get("backend") == "cupy"
                if program == "torch":
                    key = ("torch", r["model"], r["threads"], gpu, torch_isa)
                    if torch_from.setdefault(key, i) != i:  # an earlier file, same settings
                        continue
                    label = "PyTorch (cuda)" if gpu else f"PyTorch ({torch_isa})" if torch_isa \
                        else "PyTorch"
                    isas = sorted({k[4] for k in torch_from}, key=str)  # one colour per setting
                    colour = "tab:red" if gpu else ["tab:orange", "tab:brown", "tab:pink"][
                        isas.index(torch_isa) % 3]
                    style = dict(marker="s", linestyle="--", color=colour)
                elif program == "numpy":  # a GPU run's NumPy reference, on the same host
                    key = (f"numpy{i}", r["model"], r.get("numpy_threads", r["threads"]))
                    label = "tinygan (numpy, same host)"
                    style = dict(marker="^", color="tab:gray")
                else:
                    key = (f"tinygan{i}", r["model"], r["threads"])
                    blas = f", OpenBLAS {kernels}" if kernels and not gpu else ""
                    label = f"tinygan ({r['backend']}{blas}{when})"
                    style = dict(marker="o", color=["tab:blue", "tab:green", "tab:purple"][i % 3])
                threads = key[2]  # the numpy reference's own count
                out.append((key, label, style, r["model"], threads, r["batch"], st))
    grouped = {}
    for key, label, style, model, threads, batch, st in out:
        g = grouped.setdefault((key, threads), dict(label=label, style=style, model=model,
                                                     threads=threads, points=[]))
        g["points"].append((batch, st))
    return list(grouped.values())


def plot(payloads, out, threads_filter=None):
    series = series_of(payloads, threads_filter)
    models = [m for m in ("dcgan", "gan") if any(s["model"] == m for s in series)]
    fig, axes = plt.subplots(1, len(models), figsize=(6.5 * len(models), 5), squeeze=False)
    for ax, model in zip(axes[0], models):
        batches = set()
        for s in (s for s in series if s["model"] == model):
            pts = sorted(s["points"], key=lambda p: p[0])
            xs = [b for b, _ in pts]
            batches.update(xs)
            med = [1000 * st["median"] for _, st in pts]
            err = [[1000 * (st["median"] - st["min"]) for _, st in pts],
                   [1000 * (st["max"] - st["median"]) for _, st in pts]]
            style = dict(s["style"])
            if s["threads"] > 1:
                style.update(markerfacecolor="white")
                style["linestyle"] = ":" if style.get("linestyle") == "--" else "-."
            t = s["threads"]
            ax.errorbar(xs, med, yerr=err, capsize=3, label=f"{s['label']}, {t} thread"
                        + ("s" if t > 1 else ""), **style)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(sorted(batches))
        ax.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.get_yaxis().set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
        ax.get_yaxis().set_minor_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
        ax.set_xlabel("batch size")
        ax.set_ylabel("ms per training step (one D and one G update)")
        ax.set_title(f"{model}, 28x28 images, float32")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    machine = payloads[0].get("machine", {})
    gpu = f"; GPU {machine['gpu']}" if machine.get("gpu") else ""
    fig.suptitle(f"{machine.get('cpu', '?')}, {machine.get('cores', '?')} cores{gpu}; "
                 f"numpy {machine.get('numpy', '?')}, torch {machine.get('torch', '-')}",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    print(f"plot written to {out}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="the PNG to write")
    parser.add_argument("results", type=Path, nargs="+", help="JSON from bench_step.py --json")
    parser.add_argument("--threads", type=int, nargs="+", help="only these thread counts")
    args = parser.parse_args(argv)
    plot([json.loads(p.read_text()) for p in args.results], args.out, args.threads)


if __name__ == "__main__":
    main()
