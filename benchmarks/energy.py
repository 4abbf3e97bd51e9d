"""AIS test log-likelihoods of energy models on binarized MNIST, beside the published ones.

    python -m benchmarks.energy                     # RBM vs scikit-learn, DBN, DBM
    python -m benchmarks.energy --parts rbm --epochs 5
    python -m benchmarks.energy --quick             # a minute (also under CI=true)

Each row records its own settings and command; a run of some parts keeps the
report's rows of the other parts (run the parts at different budgets).

Parts (each a row, with its CPU seconds; one torch / BLAS thread):

- `rbm`: an RBM with `--n-hidden` units learnt by PCD-1 (chains = batch size)
  with plain SGD, ours (`models.energy.rbm`, through `inference.Trainer`)
  and scikit-learn's `BernoulliRBM` (the same algorithm: PCD-1, the same
  hidden size, epochs, learning rate and batch size; its visible biases
  start at 0, ours at the data's base rates). Both are scored by our AIS
  (scikit-learn's weights loaded into our RBM): the same base-rate model,
  temperatures and runs. Reported: the test log-likelihood, log Z with its
  standard error, training CPU seconds and their ratio (ours / theirs).
- `rbm_cd`: ours by CD-`--cd-k` (Salakhutdinov & Murray's setting is CD-25).
- `dbn`: `models.energy.dbn` (greedy: RBM 784-n_hidden, then a top RBM).
- `dbm`: `models.energy.dbm` (784-n_hidden-n_hidden2, PCD, mean-field), at
  `--dbm-lr` (without pretraining it collapses onto a few modes at 0.05).

log_z is that of each net's log_joint (its Bernoulli nodes' normalizers
included), so it differs between nets by constants; compare the
log-likelihoods, and read log_z_se as the AIS estimate's reliability.

Published, after far longer training: RBM 500 hidden by CD-25 -86.34
(Salakhutdinov & Murray 2008), DBN 784-500-2000 -86.22 (ibid.), DBM
784-500-1000 -84.62 (Salakhutdinov & Hinton 2009). Our runs are short: the
numbers show the machinery at a stated budget, not the published optimum.
"""
import argparse
import json
import sys
import time
from pathlib import Path

import torch

from benchmarks._report import is_quick, write_report
from inference import energy
from models.energy import common, dbm, dbn, rbm

NAME = "energy"
RESULTS = Path(__file__).resolve().parent / "results" / f"{NAME}.json"
PUBLISHED = {"rbm": -86.34, "rbm_cd": -86.34, "dbn": -86.22, "dbm": -84.62}


def _model_args(args, out, lr=None, **extra):
    argv = ["--out", str(out), "--epochs", str(args.epochs), "--lr", str(lr or args.lr),
            "--batch-size", str(args.batch_size), "--n-temperatures", str(args.n_temperatures),
            "--ais-runs", str(args.ais_runs), "--gibbs-steps", str(args.gibbs_steps),
            "--n-samples", "100", "--seed", str(args.seed), "--no-progress"]
    for name in ("train_size", "test_size"):
        if getattr(args, name):
            argv += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
    for name, value in extra.items():
        argv += [f"--{name.replace('_', '-')}"] + ([] if value is True else [str(value)])
    return argv


def _sklearn_rbm(args):
    """scikit-learn's BernoulliRBM with our settings, scored by our AIS."""
    from sklearn.neural_network import BernoulliRBM
    parser = argparse.Namespace(data="binarized_mnist", seed=args.seed,
                                train_size=args.train_size, test_size=args.test_size)
    train, test = common.load_data(parser)
    peer = BernoulliRBM(n_components=args.n_hidden, learning_rate=args.lr,
                        batch_size=args.batch_size, n_iter=args.epochs, random_state=args.seed)
    started = time.process_time()
    peer.fit(train.numpy())
    cpu = time.process_time() - started
    template = common.rbm_template("sklearn_rbm", 784, args.n_hidden)
    with torch.no_grad():
        template.params["W"].copy_(torch.as_tensor(peer.components_.T))
        template.params["b"].copy_(torch.as_tensor(peer.intercept_visible_))
        template.params["c"].copy_(torch.as_tensor(peer.intercept_hidden_))
    model = common.rbm_model(template)
    score = argparse.Namespace(n_temperatures=args.n_temperatures, ais_runs=args.ais_runs,
                               no_progress=True)
    with torch.no_grad():
        log_z = common.estimate_log_z(model, {"v": energy.base_rate_logits(train)}, score)
        loglik = energy.log_likelihood(model, log_z, {"v": test}, ["h"]).mean().item()
    return {"part": "rbm_sklearn", "model": f"scikit-learn BernoulliRBM 784-{args.n_hidden} "
            f"PCD-1", "test_loglik_nats": loglik, "log_z": log_z.log_z,
            "log_z_se": log_z.log_z_se, "train_cpu_seconds": round(cpu, 2),
            "published": PUBLISHED["rbm"]}


def _row(part, description, metrics, published):
    budget = metrics["budget"]
    return {"part": part, "model": description, "test_loglik_nats": metrics["test_loglik_nats"],
            **{key: metrics[key] for key in metrics if key.startswith("log_z")},
            "cpu_seconds": budget["cpu_seconds"], "wall_seconds": budget["wall_seconds"],
            "train_cpu_seconds": budget.get("train_cpu_seconds"), "published": published}


def _command(argv):
    return f"python -m benchmarks.{NAME} " + " ".join(argv or [])


def _merged(out, rows):
    """`rows`, after the rows of `out`'s earlier report for parts not run now (each row
    carries its own settings and command)."""
    path = Path(out)
    if not path.is_file():
        return rows
    parts = {row["part"] for row in rows}
    report = json.loads(path.read_text())
    earlier = [{"settings": report.get("settings"), "command": report.get("command"), **row}
               for row in report.get("rows", []) if row["part"] not in parts]
    return earlier + rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default="rbm,dbn,dbm")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--n-hidden", type=int, default=500)
    parser.add_argument("--n-hidden2", type=int, default=1000)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--dbm-lr", type=float, default=0.005,
                        help="the DBM's learning rate (0.005: at 0.05 it collapses)")
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--cd-k", type=int, default=25)
    parser.add_argument("--n-temperatures", type=int, default=10000)
    parser.add_argument("--ais-runs", type=int, default=100)
    parser.add_argument("--gibbs-steps", type=int, default=1000)
    parser.add_argument("--train-size", type=int, default=None)
    parser.add_argument("--test-size", type=int, default=None)
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default=str(RESULTS))
    parser.add_argument("--runs", default="runs/benchmark_energy",
                        help="folder for each part's metrics.json and samples")
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    quick = is_quick(args.quick)
    if quick:
        args.epochs, args.n_hidden, args.n_hidden2 = 1, 50, 50
        args.n_temperatures, args.ais_runs, args.gibbs_steps = 100, 10, 10
        args.train_size, args.test_size = args.train_size or 1000, args.test_size or 200
    torch.set_num_threads(1)
    runs = Path(args.runs)
    rows = []
    for part in args.parts.split(","):
        done = len(rows)
        if part == "rbm":
            ours = rbm.main(_model_args(args, runs / "rbm", n_hidden=args.n_hidden,
                                        persistent=True))
            rows.append(_row("rbm", f"ours RBM 784-{args.n_hidden} PCD-1", ours,
                             PUBLISHED["rbm"]))
            theirs = _sklearn_rbm(args)
            theirs["train_cpu_ratio_ours_to_sklearn"] = round(
                ours["budget"]["train_cpu_seconds"] / theirs["train_cpu_seconds"], 3)
            rows.append(theirs)
        elif part == "rbm_cd":
            ours = rbm.main(_model_args(args, runs / "rbm_cd", n_hidden=args.n_hidden,
                                        cd_k=args.cd_k))
            rows.append(_row("rbm_cd", f"ours RBM 784-{args.n_hidden} CD-{args.cd_k}", ours,
                             PUBLISHED["rbm_cd"]))
        elif part == "dbn":
            ours = dbn.main(_model_args(args, runs / "dbn", n_hidden=args.n_hidden,
                                        n_hidden2=args.n_hidden2))
            rows.append(_row("dbn", f"ours DBN 784-{args.n_hidden}-{args.n_hidden2}", ours,
                             PUBLISHED["dbn"]))
        elif part == "dbm":
            ours = dbm.main(_model_args(args, runs / "dbm", lr=args.dbm_lr,
                                        n_hidden=args.n_hidden, n_hidden2=args.n_hidden2))
            rows.append(_row("dbm", f"ours DBM 784-{args.n_hidden}-{args.n_hidden2}", ours,
                             PUBLISHED["dbm"]))
        else:
            raise SystemExit(f"unknown part {part!r} (rbm, rbm_cd, dbn, dbm)")
        for row in rows[done:]:
            print(f"{row['part']:12s} {row['model']:40s} {row['test_loglik_nats']:9.2f} nats "
                  f"(published {row['published']})", flush=True)
        settings = {key: getattr(args, key) for key in (
            "epochs", "n_hidden", "n_hidden2", "lr", "dbm_lr", "batch_size", "cd_k",
            "n_temperatures", "ais_runs", "train_size", "test_size")}
        for row in rows[done:]:
            row.update(settings=settings, command=_command(argv))
        write_report(NAME, __doc__, argv, _merged(args.out, rows), args.out, quick, threads=1,
                     published=PUBLISHED)  # after each part: a partial run keeps its rows
    return rows


if __name__ == "__main__":
    main()
