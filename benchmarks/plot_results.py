"""Plot training-step time against batch size from a bench_step.py --json file.

    python benchmarks/bench_step.py --batch 16 32 64 128 256 --json benchmarks/step.json
    python benchmarks/plot_results.py benchmarks/step.json benchmarks/step_time.png

One panel per model; one line per (program, threads); markers at the median over
runs, bars from the fastest to the slowest run.
"""

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

STYLE = {"tinygan": dict(marker="o"), "torch": dict(marker="s", linestyle="--")}


def plot(results, out, title=""):
    models = sorted({r["model"] for r in results}, key=["dcgan", "gan"].index)
    fig, axes = plt.subplots(1, len(models), figsize=(6 * len(models), 4.5), squeeze=False)
    for ax, model in zip(axes[0], models):
        rows = [r for r in results if r["model"] == model]
        series = sorted({(p, r["threads"], r["backend"]) for r in rows for p in r["stats"]})
        for program, threads, backend in series:
            pts = sorted((r["batch"], r["stats"][program]) for r in rows
                         if r["threads"] == threads and r["backend"] == backend
                         and program in r["stats"])
            batches = [b for b, _ in pts]
            med = [1000 * s["median"] for _, s in pts]
            lo = [1000 * (s["median"] - s["min"]) for _, s in pts]
            hi = [1000 * (s["max"] - s["median"]) for _, s in pts]
            name = f"tinygan ({backend})" if program == "tinygan" else "PyTorch"
            ax.errorbar(batches, med, yerr=[lo, hi], capsize=3,
                        label=f"{name}, {threads} thread{'s' if threads > 1 else ''}",
                        **STYLE.get(program, {}))
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(sorted({r["batch"] for r in rows}))
        ax.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.get_yaxis().set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
        ax.get_yaxis().set_minor_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
        ax.set_xlabel("batch size")
        ax.set_ylabel("ms per training step (D + G update)")
        ax.set_title(f"{model} on 28x28 images")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    print(f"plot written to {out}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, help="JSON written by bench_step.py --json")
    parser.add_argument("out", type=Path, nargs="?", default=Path("step_time.png"))
    args = parser.parse_args(argv)
    payload = json.loads(args.results.read_text())
    machine = payload.get("machine", {})
    title = ", ".join(f"{k} {v}" for k, v in machine.items())
    plot(payload["results"], args.out, title)


if __name__ == "__main__":
    main()
