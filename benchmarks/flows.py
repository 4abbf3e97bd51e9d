"""Normalizing flows: bits/dim on MNIST at two CPU budgets beside the papers; MAF vs zuko, nflows.

    python -m benchmarks.flows                          # both parts (~1 h of CPU)
    python -m benchmarks.flows --parts images --budgets 30 120 --test-size 1000
    python -m benchmarks.flows --parts zuko --steps 2000 --seeds 3
    python -m benchmarks.flows --parts nflows --steps 1000 --seeds 3 --repeats 5
    python -m benchmarks.flows --quick                  # a minute (also under CI=true)

Part `images`: each zoo model (`models.flows.nice`, `realnvp`, `glow`,
`maf`, `vflow`) trained on dequantized MNIST (60,000 images, one torch
thread) until each CPU budget is spent (`--cpu-budget`, checked before every
batch), then scored on the first `--test-size` test images: bits/dim and
nats in logit space (the MAF paper's measure), beside the published numbers:
RealNVP 1.06 and Glow 1.05 bits/dim (Dinh et al. 2017 table 1; Kingma &
Dhariwal 2018 table 2), MAF(5) -1300.5 and RealNVP(5) -1323.2 nats in logit
space (Papamakarios et al. 2017 table 2). Those trained for days on GPUs with
far larger nets: at these budgets only the trend (the larger budget is
better) and the ordering are meaningful. VFlow's bound and its
importance-sampled log-likelihood stand beside Glow of the same depth and
width at the same budget (its flow on x alone).

Part `zuko`: the same MAF in ppl and in zuko (`zuko.flows.MAF`): 5
autoregressive layers with 2 hidden layers of 100 ReLU units, alternating
orders (ours: `ppl.flows.maf` with reversals), log-scales soft-clamped as
zuko's (`max_log_scale=-log(1e-3)`), MADE weights with nn.Linear's default
init as zuko's (ours start the output layer at zero otherwise), a standard normal base, on
the UCI power-plant table (split 0, standardized), Adam 1e-3, batches of
512, the same batches, `--steps` steps, `--seeds` seeds; reported the test
NLL of each (mean and spread over seeds: "equal within noise" means the
difference is within the seed-to-seed spread), and the CPU time per
training step and per sample batch (1000 samples), measured interleaved in
one process (medians of `--repeats` rounds), as the ratio ours / zuko.

Part `nflows`: the same comparison with nflows as a third column
(`MaskedAffineAutoregressiveTransform` layers with `ReversePermutation`s
between them, a non-residual MADE of 2 ReLU layers of 100 units, a standard
normal base). What nflows cannot match: its scale is `softplus(u) + 1e-3`
(no soft clamp of the log-scale; at init the scale is about 0.69, not 1).
Each row says what differs (`differences_vs_<peer>`).
"""
import argparse
import json
import math
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from benchmarks._report import RESULTS, is_quick, write_report

PUBLISHED = {
    "realnvp": {"test_bits_per_dim": 1.06, "test_loglik_logit_nats": -1323.2},
    "glow": {"test_bits_per_dim": 1.05},
    "maf": {"test_loglik_logit_nats": -1300.5},
}
MODELS = ("nice", "realnvp", "glow", "maf", "vflow")


def run_model(model, budget, test_size, train_size=None, extra=()):
    """Train `models.flows.<model>` for `budget` CPU seconds; its metrics.json as a dict."""
    with tempfile.TemporaryDirectory() as out:
        command = [sys.executable, "-m", f"models.flows.{model}", "--cpu-budget", str(budget),
                   "--epochs", "1000", "--test-size", str(test_size), "--out", out,
                   "--threads", "1", "--no-progress", "--n-samples", "16", *extra]
        if train_size:
            command += ["--train-size", str(train_size)]
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        return json.loads((Path(out) / "metrics.json").read_text())


def images_part(budgets, test_size, train_size=None, done=(), save=None, models=MODELS):
    """One row per (budget, model); rows in `done` (from an interrupted run of the same
    command) are kept, not rerun; `save(rows)` is called after each new row."""
    rows = list(done)
    for budget in budgets:
        for model in models:
            if any(r["model"] == model and r["cpu_budget_seconds"] == budget for r in rows):
                continue
            print(f"{model} at {budget} CPU s ...", flush=True)
            extra = ["--is-samples", "8"] if model == "vflow" else []
            metrics = run_model(model, budget, test_size, train_size, extra)
            row = {"model": model, "cpu_budget_seconds": budget,
                   "train_steps": metrics["budget"]["train_steps"],
                   "cpu_seconds_total": metrics["budget"]["cpu_seconds"],
                   "n_parameters": metrics.get("n_parameters"),
                   "test_bits_per_dim": metrics["test_bits_per_dim"],
                   "test_loglik_logit_nats": metrics["test_loglik_logit_nats"]}
            if model == "vflow":
                row["test_elbo_bits_per_dim"] = metrics["test_elbo_bits_per_dim"]
                row["test_elbo_logit_nats"] = metrics["test_elbo_logit_nats"]
            for name, value in PUBLISHED.get(model, {}).items():
                row[f"published_{name}"] = value
            rows.append(row)
            print("  " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                   for k, v in row.items()), flush=True)
            if save is not None:
                save(rows)
    return rows


# -- ppl vs zuko and nflows -------------------------------------------------
# One builder per library: (module, log_prob(x), sample(n)) of the same MAF, each
# drawing its initial weights after `torch.manual_seed(seed)`.
def ppl_maf(dim, hidden, n_layers, seed):
    """Ours: `ppl.flows.maf` (reversals between layers), log-scales soft-clamped as zuko's,
    the MADE output layer at nn.Linear's default init as the peers' (ours starts it at zero)."""
    from ppl.distributions import FlowDistribution, Normal
    from ppl.flows import MaskedAutoregressive, maf
    torch.manual_seed(seed)
    layers = maf(dim, n_layers, list(hidden), max_log_scale=-math.log(1e-3))
    for layer in layers:
        if isinstance(layer, MaskedAutoregressive):
            layer.made.output.reset_parameters()
    loc = torch.zeros(dim)

    def flow():
        return FlowDistribution(Normal(loc, std=1., group_ndims=1), layers)
    return layers, lambda x: flow().log_prob(x), lambda n: flow().sample(n)


def zuko_maf(dim, hidden, n_layers, seed):
    """zuko's `MAF` (alternating orders, soft-clamped log-scales)."""
    import zuko
    torch.manual_seed(seed)
    flow = zuko.flows.MAF(dim, transforms=n_layers, hidden_features=tuple(hidden))
    return flow, lambda x: flow().log_prob(x), lambda n: flow().sample((n,))


def nflows_maf(dim, hidden, n_layers, seed):
    """nflows' MAF: `MaskedAffineAutoregressiveTransform` layers with a `ReversePermutation`
    between them; a plain (non-residual) MADE of `len(hidden)` ReLU layers of `hidden[0]`
    units (nflows gives every hidden layer one width); scale `softplus(u) + 1e-3`."""
    from nflows.distributions.normal import StandardNormal
    from nflows.flows.base import Flow
    from nflows.transforms.autoregressive import MaskedAffineAutoregressiveTransform
    from nflows.transforms.base import CompositeTransform
    from nflows.transforms.permutations import ReversePermutation
    if len(set(hidden)) != 1:
        raise ValueError(f"nflows' MADE has one hidden width, got hidden={list(hidden)}")
    torch.manual_seed(seed)
    transforms = []
    for i in range(n_layers):
        if i:
            transforms.append(ReversePermutation(dim))
        transforms.append(MaskedAffineAutoregressiveTransform(
            dim, hidden[0], num_blocks=len(hidden) - 1, use_residual_blocks=False))
    flow = Flow(CompositeTransform(transforms), StandardNormal([dim]))
    return flow, flow.log_prob, flow.sample


BUILDERS = {"ppl": ppl_maf, "zuko": zuko_maf, "nflows": nflows_maf}
DIFFERENCES = {
    "zuko": "same layers, widths, orders, init (nn.Linear default) and log-scale soft clamp "
            "(|log scale| <= log 1e3); zuko's MADE masks and its transform direction are its own",
    "nflows": "same layers, widths, reversals between layers, ReLU, nn.Linear default init; "
              "scale parametrised as softplus(u) + 1e-3 (log-scale in [log 1e-3, inf), no "
              "soft clamp) where ppl and zuko soft-clamp the log-scale; nflows applies the "
              "permutation as a separate transform and samples by dim passes per layer like "
              "the others",
}


def train_steps(module, log_prob, train, steps, batch_size, seed):
    """Adam 1e-3 on the mean NLL over the same seeded batches; CPU seconds per step."""
    optimizer = torch.optim.Adam(module.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(seed)
    times = []
    for _ in range(steps):
        batch = train[torch.randint(len(train), (batch_size,), generator=g)]
        started = time.process_time()
        loss = -log_prob(batch).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        times.append(time.process_time() - started)
    return times


def peer_part(peers, steps, seeds, repeats, batch_size=512, hidden=(100, 100), n_layers=5):
    """Ours beside each library in `peers`: test NLL per seed, then CPU time per step and
    per sample batch measured interleaved (rounds of 50 steps and one batch each)."""
    from models.flows.maf import load_table
    torch.set_num_threads(1)
    train, test, _ = load_table("power-plant")
    dim = train.shape[1]
    names = ("ppl", *peers)
    nll = {name: [] for name in names}
    for seed in range(seeds):
        for name in names:
            module, log_prob, _ = BUILDERS[name](dim, hidden, n_layers, seed)
            train_steps(module, log_prob, train, steps, batch_size, seed)
            with torch.no_grad():
                nll[name].append(-log_prob(test).mean().item())
        print(f"seed {seed}: test NLL " + ", ".join(f"{n} {nll[n][-1]:.4f}" for n in names),
              flush=True)
    flows = {name: BUILDERS[name](dim, hidden, n_layers, 0) for name in names}
    step_times = {name: [] for name in names}
    sample_times = {name: [] for name in names}
    for _ in range(repeats):
        for name, (module, log_prob, sample) in flows.items():
            step_times[name].append(statistics.median(
                train_steps(module, log_prob, train, 50, batch_size, 0)))
            with torch.no_grad():
                started = time.process_time()
                sample(1000)
                sample_times[name].append(time.process_time() - started)
    step = {k: statistics.median(v) for k, v in step_times.items()}
    sample = {k: statistics.median(v) for k, v in sample_times.items()}
    row = {"data": "power-plant (UCI, split 0, standardized)", "dim": dim,
           "layers": n_layers, "hidden": list(hidden), "batch_size": batch_size,
           "steps": steps, "seeds": seeds, "timing_rounds": repeats}
    for name in names:
        row[f"test_nll_{name}_mean"] = statistics.mean(nll[name])
        row[f"test_nll_{name}_sd"] = statistics.stdev(nll[name]) if seeds > 1 else 0.
        row[f"test_nll_{name}_per_seed"] = nll[name]
        row[f"step_ms_{name}"] = 1000 * step[name]
        row[f"sample_1000_ms_{name}"] = 1000 * sample[name]
    for peer in peers:
        row[f"test_nll_difference_vs_{peer}"] = (row["test_nll_ppl_mean"]
                                                 - row[f"test_nll_{peer}_mean"])
        row[f"step_time_ratio_vs_{peer}"] = step["ppl"] / step[peer]
        row[f"sample_time_ratio_vs_{peer}"] = sample["ppl"] / sample[peer]
        row[f"differences_vs_{peer}"] = DIFFERENCES[peer]
    print("  " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                           for k, v in row.items() if not k.startswith("differences")), flush=True)
    return [row]


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.flows", description=__doc__)
    parser.add_argument("--parts", nargs="+", choices=["images", "zuko", "nflows"],
                        default=["images", "zuko"],
                        help="nflows: ppl, zuko and nflows side by side")
    parser.add_argument("--budgets", type=float, nargs="+", default=[30, 120],
                        help="CPU seconds of training per model (30 120)")
    parser.add_argument("--test-size", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=2000,
                        help="zuko / nflows parts: training steps")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=7,
                        help="zuko / nflows parts: timing rounds")
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default=None)
    parser.add_argument("--resume", action="store_true",
                        help="keep the image rows already in --out (an interrupted run of the "
                             "same command, which saves after each row) and run the rest")
    args = parser.parse_args(argv)
    argv = argv if argv is not None else sys.argv[1:]
    quick = is_quick(args.quick)
    if quick:
        args.budgets, args.test_size, args.steps, args.seeds, args.repeats = [2], 50, 20, 2, 2
    name = "flows" + ("" if set(args.parts) == {"images", "zuko"} else "_" + "_".join(args.parts))
    out = Path(args.out or RESULTS / f"{name}{'_quick' if quick else ''}.json")
    done = json.loads(out.read_text()).get("images", []) if args.resume and out.exists() else []

    def report(partial=False, **sections):
        rows = [row for part in sections.values() for row in part]
        return write_report("flows", __doc__, argv, rows, out, quick, threads=1,
                            complete=not partial, **sections)
    sections = {}
    if "images" in args.parts:
        sections["images"] = images_part(
            args.budgets, args.test_size, train_size=2000 if quick else None, done=done,
            save=lambda rows: report(partial=True, images=rows), models=args.models)
    if "zuko" in args.parts:
        sections["zuko"] = peer_part(("zuko",), args.steps, args.seeds, args.repeats)
    if "nflows" in args.parts:
        sections["nflows"] = peer_part(("zuko", "nflows"), args.steps, args.seeds, args.repeats)
    return report(**sections)


if __name__ == "__main__":
    main()
