"""GANs on MNIST by sample quality: classifier FID, inception score, precision/recall and the
Parzen-window log-likelihood of their samples, beside the MNIST images themselves (the
ceiling) and the VAE of the zoo.

    python -m models.gan.metrics                       # once: trains and caches the classifier
    python -m benchmarks.gan_mnist                     # every model, the small default budget
    python -m benchmarks.gan_mnist --epochs 20 --train-size 50000 --n-samples 10000
    python -m benchmarks.gan_mnist --quick             # a few minutes (CI=true too)

Each model runs its own command line (`models.gan.<name>.main(argv)` or
`models.latent.vae`, each in a fresh process) on the first `--train-size`
training images for `--epochs` (the VAE for `--vae-epochs`: it is cheaper per
epoch), and draws `--n-samples` samples (2,000 by default, a budget for the
shared 2-core machine; Goodfellow et al.'s protocol is `--n-samples 10000
--test-size 10000`). The metrics use the cached MNIST classifier
(`models.gan.metrics`; its test accuracy is recorded) against the first
`--test-size` test images; the Parzen bandwidth is chosen on 1,000 validation
images (train[50000:51000]). Each row records the CPU seconds of its run
(training and evaluation) and, for the GANs, the class histogram of the
samples and the classifier FID after each epoch beside the critic's loss.
The ceiling row scores `--n-samples` held-out training images (the last ones of
train[:50000]) as if they were samples. The VAE's samples are its Bernoulli means.

Published: the GAN's Parzen log-likelihood 225 +- 2 on MNIST (Goodfellow et al.
2014, 10,000 samples against the test set, thousands of epochs); Triple-GAN 0.91%
test error with 100 labels (Li et al. 2017). FID/IS here are in the feature space of
our classifier, not Inception's: comparable between rows, not with published FIDs.
"""
import argparse
import importlib
import json
import multiprocessing
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from benchmarks._report import RESULTS, is_quick, write_report
from models.data import data_root, load_mnist
from models.gan import metrics

NAME = "gan_mnist"
MODELS = {  # name -> (module, extra arguments)
    "gan": ("models.gan.gan", []),
    "dcgan": ("models.gan.dcgan", ["--width", "16", "--lr", "1e-3", "--minibatch-std"]),
    "wgan_gp": ("models.gan.wgan", ["--penalty", "gp", "--width", "16"]),
    "wgan_clip": ("models.gan.wgan", ["--penalty", "clip", "--width", "16"]),
    "cgan": ("models.gan.cgan", []),
    "triple_gan": ("models.gan.triple_gan", ["--labels", "100"]),
    "vae": ("models.latent.vae", ["--iw-samples", "10"]),
}
PUBLISHED = {"gan_parzen_loglik_nats": {"value": 225., "se": 2.,
                                        "source": "Goodfellow et al. 2014, table 1"},
             "triple_gan_test_error_100_labels": {"value": 0.0091,
                                                  "source": "Li et al. 2017, table 1"}}


def _call_main(module, argv):
    torch.set_num_threads(1)
    return importlib.import_module(module).main(argv)


def _images(array):
    return array.reshape(len(array), -1).astype(np.float32) / 255.


def run_model(name, args, out):
    module, extra = MODELS[name]
    epochs = args.vae_epochs if name == "vae" else args.epochs
    # a run's own metrics (the VAE's IS log-lik, a GAN's FID curve) on a few test images:
    # the table's are computed here, once, against all `--test-size`
    test_size = 100 if name == "vae" else min(args.test_size, 1000)
    argv = [*extra, "--data", "mnist", "--epochs", str(epochs), "--seed", str(args.seed),
            "--train-size", str(args.train_size), "--test-size", str(test_size),
            "--n-samples", str(args.n_samples), "--out", str(out), "--no-progress"]
    if args.checkpoint_dir:
        argv += ["--checkpoint", str(Path(args.checkpoint_dir) / f"{name}.pt")]
    print(f"\n== {name}: python -m {module} {' '.join(argv)}", flush=True)
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        written = pool.apply(_call_main, (module, argv))
    return written, f"python -m {module} " + " ".join(a for a in argv if not a.startswith("/"))


def score(samples, data, classifier):
    """The metrics of samples [N, 784] against the test images, with the class histogram."""
    found = metrics.evaluate_samples(samples, data["test"], classifier, valid=data["valid"],
                                     parzen_test=data["test"])
    probs = metrics.features_and_probs(classifier, samples)[1]
    found["class_histogram"] = metrics.class_histogram(probs).round(4).tolist()
    return found


def main(argv=None):
    parser = argparse.ArgumentParser(prog=f"python -m benchmarks.{NAME}", description=__doc__)
    parser.add_argument("--models", default=",".join(m for m in MODELS if m != "triple_gan"),
                        help=f"comma-separated, of {', '.join(MODELS)} (default: all but "
                             f"triple_gan, whose budget is its own)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--vae-epochs", type=int, default=5)
    parser.add_argument("--train-size", type=int, default=5000)
    parser.add_argument("--test-size", type=int, default=2000)
    parser.add_argument("--n-samples", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--checkpoint-dir", default=None,
                        help="each model checkpoints to DIR/<name>.pt and resumes from it")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", default=str(RESULTS / f"{NAME}.json"))
    argv = sys.argv[1:] if argv is None else list(argv)  # recorded in the report's command
    args = parser.parse_args(argv)
    quick = is_quick(args.quick)
    if quick:
        args.epochs, args.vae_epochs, args.train_size = 1, 1, 512
        args.test_size, args.n_samples = 500, 500
    classifier, accuracy = metrics.load_classifier()
    if classifier is None:
        raise SystemExit("the metrics classifier is not cached: run `python -m "
                         "models.gan.metrics` first")
    torch.set_num_threads(1)
    mnist = load_mnist(data_root() / "mnist")
    data = {"test": _images(mnist.test_images[:args.test_size]),
            "valid": _images(mnist.train_images[50000:51000])}
    previous = json.loads(Path(args.out).read_text()) if Path(args.out).is_file() \
        and not quick else {"rows": []}
    rows = {row["model"]: row for row in previous["rows"]}
    settings = {"epochs": args.epochs, "vae_epochs": args.vae_epochs,
                "train_size": args.train_size, "test_size": args.test_size,
                "n_samples": args.n_samples}
    same_protocol = all(previous.get("settings", {}).get(key) == settings[key]
                        for key in ("test_size", "n_samples"))

    def report():
        return write_report(NAME, __doc__, argv, list(rows.values()), args.out, quick,
                            threads=1, classifier={"path": str(metrics.classifier_path()),
                                                   "test_accuracy": accuracy},
                            published=PUBLISHED, settings=settings)
    ceiling = "mnist_images (ceiling)"
    if ceiling not in rows or not same_protocol:  # rows of another run are kept
        held_out = _images(mnist.train_images[50000 - args.n_samples:50000])
        rows[ceiling] = {"model": ceiling, **score(held_out, data, classifier)}
        report()
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            written, command = run_model(name, args, Path(tmp) / name)
            samples = np.load(Path(tmp) / name / "samples.npy")
            budget = written["budget"]
            row = {"model": name, "command": command, "epochs": budget["epochs"],
                   "train_size": args.train_size, "cpu_seconds": budget["cpu_seconds"],
                   "wall_seconds": budget["wall_seconds"], **score(samples, data, classifier)}
            for key in ("train_cpu_seconds", "critic_loss_curve", "fid_curve",
                        "test_error_curve"):
                if key in budget:
                    row[key] = budget[key]
            for key in ("critic_loss_fid_correlation", "critic_loss_fid_spearman",
                        "conditional_error", "test_loglik_nats",
                        "test_error"):
                if key in written:
                    row[key] = written[key]
            rows[name] = row
            print({k: v for k, v in row.items() if k != "command"}, flush=True)
            report()
    return report()


if __name__ == "__main__":
    main()
