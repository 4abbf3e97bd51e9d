"""Autoregressive models on binarized MNIST: test NLL at two CPU budgets, sampling speed.

    python -m benchmarks.autoregressive nll --budget small     # each model, a short run
    python -m benchmarks.autoregressive nll --budget large     # the long runs
    python -m benchmarks.autoregressive sampling                # images/s vs plain PyTorch
    python -m benchmarks.autoregressive sampling --quick        # seconds (also CI=true)

`nll`: each model of `models/autoregressive` is run from its command line
(one torch thread, `--checkpoint` in its folder, so an interrupted run
resumes) with the settings of the budget, and its test negative
log-likelihood in nats on the full binarized MNIST test set (10,000 images)
is reported beside the published number (Larochelle & Murray 2011 for FVSBN
and NADE, Germain et al. 2015 for MADE, van den Oord et al. 2016 for
PixelCNN), with the CPU seconds the run took (`zoo.Budget`: training,
validation, evaluation and sampling). The large budget's NADE and MADE stop
early as the papers do: `--valid-size` scores the validation split after
every epoch and the test uses the best epoch's weights (`best_epoch`). A run
whose folder already holds `metrics.json` is read back, not repeated
(`--fresh` reruns).

`sampling`: images per second drawn by the `Autoregressive` node (784 passes
of the network, one pixel each) against the same network sampled by a loop
hand-written in plain PyTorch (`net(x)`, sigmoid, `torch.bernoulli`, one
pixel at a time), for MADE (784-500-784) and a PixelCNN (32 channels, 5
layers): same weights, batch, thread count; interleaved repeats, the ratio of
the minimum CPU times reported (the steadier estimate on a shared machine).
"""
import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from benchmarks._report import RESULTS, is_quick, write_report
from models.autoregressive import common

NAME = "autoregressive"

PUBLISHED = {  # test NLL in nats on Larochelle's binarized MNIST
    "fvsbn": (97.45, "Larochelle & Murray 2011, Table 2"),
    "nade": (88.86, "Larochelle & Murray 2011, Table 2 (500 hidden units)"),
    "made": (88.40, "Germain et al. 2015, Table 6 (1 hidden layer, 1 mask)"),
    "made_32_masks": (86.64, "Germain et al. 2015, Table 6 (32 masks)"),
    "pixelcnn": (81.30, "van den Oord et al. 2016 (Pixel RNN paper), Table 4"),
}

# model -> (module, command-line options) for each budget; every run has one thread.
BUDGETS = {
    "small": {
        "fvsbn": ("fvsbn", ["--epochs", "2"]),
        "nade": ("nade", ["--epochs", "1", "--train-size", "10000", "--lr", "3e-3"]),
        "made": ("made", ["--epochs", "3", "--direct", "--lr", "4e-3"]),
        "made_32_masks": ("made", ["--masks", "32", "--epochs", "3", "--lr", "2e-3"]),
        "pixelcnn": ("pixelcnn", ["--epochs", "1", "--train-size", "5000", "--channels", "32",
                                  "--layers", "5", "--n-samples", "16"]),
    },
    "large": {
        "fvsbn": ("fvsbn", ["--epochs", "10"]),
        "nade": ("nade", ["--epochs", "5", "--batch-size", "50", "--lr", "3e-3",
                          "--valid-size", "5000", "--n-samples", "20"]),
        "made": ("made", ["--epochs", "40", "--direct", "--lr", "3e-3", "--weight-decay", "1e-4",
                          "--valid-size", "10000"]),
        "made_32_masks": ("made", ["--masks", "32", "--epochs", "10", "--lr", "2e-3"]),
        "pixelcnn": ("pixelcnn", ["--epochs", "1", "--train-size", "20000", "--channels", "32",
                                  "--layers", "5", "--n-samples", "16"]),
    },
}


def run_nll(budget, root, fresh, models, progress=True):
    """Run (or read back) each model of `budget`; rows of model, ours, published, CPU s."""
    rows = []
    for model, (module, options) in BUDGETS[budget].items():
        if models and model not in models:
            continue
        out = Path(root) / budget / model
        argv = options + ["--out", str(out), "--checkpoint", str(out / "checkpoint.pt"),
                          "--threads", "1"]
        command = f"python -m models.autoregressive.{module} " + " ".join(argv)
        if fresh or not (out / "metrics.json").is_file():
            print(f"\n== {model} ({budget}): {command}", flush=True)
            __import__(f"models.autoregressive.{module}", fromlist=["main"]).main(
                argv + ([] if progress else ["--no-progress"]))
        metrics = json.loads((out / "metrics.json").read_text())
        published, source = PUBLISHED[model]
        ours = -metrics["test_loglik_nats"]
        rows.append({"model": model, "budget": budget, "test_nll_nats": round(ours, 2),
                     "published_nll_nats": published, "gap_nats": round(ours - published, 2),
                     "published_source": source,
                     "cpu_seconds": metrics["budget"]["cpu_seconds"],
                     "wall_seconds": metrics["budget"]["wall_seconds"],
                     "epochs": metrics["budget"]["epochs"], "command": command,
                     **{k: v for k, v in metrics.items() if k.startswith("test_") and
                        k != "test_loglik_nats"},
                     **({"valid_nll_nats_best": round(-metrics["valid_loglik_nats_best"], 2),
                         "best_epoch": int(metrics["best_epoch"])}
                        if "best_epoch" in metrics else {})})
        print(f"{model:>14} {budget}: NLL {ours:7.2f} nats (published {published:.2f}, "
              f"gap {ours - published:+.2f}) in {metrics['budget']['cpu_seconds']:.0f} CPU s",
              flush=True)
    return rows


def plain_sample(net, n, value_shape):
    """The hand-written baseline: one pixel at a time, `net(x)`, sigmoid, bernoulli."""
    x = torch.zeros((n,) + tuple(value_shape))
    flat = x.view(n, -1)
    with torch.no_grad():
        for i in range(flat.shape[1]):
            logits = net(x).reshape(n, -1)
            flat[:, i] = torch.bernoulli(torch.sigmoid(logits[:, i]))
    return x


def run_sampling(quick):
    from models.autoregressive.made import MaskedMADE
    from models.autoregressive.pixelcnn import PixelCNN
    torch.set_num_threads(1)
    torch.manual_seed(0)
    nets = {"made": (MaskedMADE(784, [500]), (784,), 100),
            "pixelcnn": (PixelCNN(32, 5), (1, 28, 28), 4)}
    repeats = 2 if quick else 3
    rows = []
    for name, (net, value_shape, n) in nets.items():
        if quick:
            n = max(2, n // 10)
        node = lambda: common.build_model(net, value_shape=value_shape,  # noqa: E731
                                          n_samples=n)["x"].tensor
        plain = lambda: plain_sample(net, n, value_shape)  # noqa: E731
        times = {"ours": [], "plain": []}
        for r in range(repeats):
            for label, fn in (("ours", node), ("plain", plain)) if r % 2 == 0 else \
                    (("plain", plain), ("ours", node)):
                started = time.process_time()
                fn()
                times[label].append(time.process_time() - started)
        ratio = min(times["ours"]) / min(times["plain"])
        rows.append({"net": name, "batch": n, "repeats": repeats,
                     "ours_images_per_cpu_s": round(n / min(times["ours"]), 2),
                     "plain_images_per_cpu_s": round(n / min(times["plain"]), 2),
                     "ours_cpu_s_median": round(statistics.median(times["ours"]), 3),
                     "plain_cpu_s_median": round(statistics.median(times["plain"]), 3),
                     "time_ratio_ours_over_plain": round(ratio, 3)})
        print(f"{name:>9}: ours {n / min(times['ours']):7.2f} images/s, plain "
              f"{n / min(times['plain']):7.2f} images/s, time ratio {ratio:.3f}", flush=True)
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(prog=f"python -m benchmarks.{NAME}",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("part", choices=["nll", "sampling"])
    parser.add_argument("--budget", choices=sorted(BUDGETS), default="small")
    parser.add_argument("--models", nargs="*", default=None, help="only these models")
    parser.add_argument("--root", default="runs/benchmarks/autoregressive",
                        help="folder of the runs (one per budget and model)")
    parser.add_argument("--fresh", action="store_true", help="rerun runs already finished")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--note", default=None, help="a note kept in the results JSON")
    parser.add_argument("--out", default=None, help="results JSON (default benchmarks/results/"
                                                    "autoregressive_<part>[_<budget>].json)")
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    quick = is_quick(args.quick)
    if args.part == "nll":
        rows = run_nll(args.budget, args.root, args.fresh, args.models, not args.no_progress)
        out = args.out or RESULTS / f"{NAME}_nll_{args.budget}.json"
    else:
        rows = run_sampling(quick)
        out = args.out or RESULTS / f"{NAME}_sampling.json"
    notes = {} if args.note is None else {"note": args.note}
    return write_report(NAME, __doc__, argv, rows, out, quick, threads=1, **notes)


if __name__ == "__main__":
    main()
