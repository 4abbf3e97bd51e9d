"""Each latent model of this package runs from its command line for a few steps and writes
the zoo's outputs: metrics.json (with a budget), samples.npy [N, pixels] in [0, 1]."""
import importlib
import json

import numpy as np
import pytest

from models.data import data_root

MNIST = data_root() / "mnist"
BMNIST = data_root() / "binarized_mnist" / "binarized_mnist.npz"
needs_mnist = pytest.mark.skipif(not MNIST.is_dir(), reason=f"MNIST not found at {MNIST}")
needs_bmnist = pytest.mark.skipif(not BMNIST.is_file(),
                                  reason=f"binarized MNIST not found at {BMNIST}")

SMALL = ["--epochs", "1", "--train-size", "64", "--batch-size", "32", "--test-size", "20",
         "--iw-samples", "5", "--n-samples", "12", "--z-dim", "4", "--no-progress"]
MLP = ["--hidden", "16"]

# (module, its template globals to replace by fresh ones, arguments, pixels, own metric)
CASES = {
    "vae": ("vae", ("build_gen", "build_q_net"), MLP, 64, None),
    "iwae": ("iwae", ("build_gen", "build_q_net"), MLP + ["--particles", "3"], 64,
             "test_iw_bound_k3_nats"),
    "iwae2": ("iwae", ("build_gen2", "build_q_net2"), MLP + ["--particles", "3", "--layers", "2"],
              64, "test_iw_bound_k3_nats"),
    "bernoulli_vae": ("bernoulli_vae", ("build_gen", "build_q_net"), MLP + ["--particles", "3"],
                      64, "test_iw_bound_k3_nats"),
    "cvae": ("cvae", ("build_gen", "build_q_net"), MLP + ["--data", "digits"], 64, None),
    "vae_flow_planar": ("vae_flow", ("build_gen", "build_q_net"),
                        MLP + ["--data", "digits", "--flow", "planar", "--flow-length", "2"],
                        64, None),
    "vae_flow_iaf": ("vae_flow", ("build_gen", "build_q_net"),
                     MLP + ["--data", "digits", "--flow", "iaf", "--flow-length", "2"], 64, None),
    "conv_vae": pytest.param(("conv_vae", ("build_gen", "build_q_net"),
                              ["--data", "mnist", "--train-size", "20", "--batch-size", "10",
                               "--test-size", "10"], 784, None), marks=needs_mnist),
    "vae_binarized_mnist": pytest.param(
        ("vae", ("build_gen", "build_q_net"), MLP + ["--data", "binarized_mnist"], 784, None),
        marks=needs_bmnist),
}


def run_main(monkeypatch, module_name, templates, argv):
    """`python -m models.latent.<module_name> ARGV` in process, on fresh templates."""
    module = importlib.import_module(f"models.latent.{module_name}")
    fresh = module.new_templates(2) if "build_gen2" in templates else module.new_templates()
    for name, template in zip(templates, fresh):
        monkeypatch.setattr(module, name, template)
    return module.main(argv)


@pytest.mark.parametrize("case", list(CASES.values()), ids=list(CASES))
def test_runs_and_writes_metrics_and_samples(case, tmp_path, monkeypatch):
    module_name, templates, extra, pixels, own_metric = case
    metrics = run_main(monkeypatch, module_name, templates,
                       SMALL + extra + ["--out", str(tmp_path)])
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved == metrics
    assert metrics["test_loglik_nats"] < 0 and metrics["test_elbo_nats"] < 0
    # IS with the guide is a stochastic lower bound at least as tight as the ELBO on average
    assert metrics["test_loglik_nats"] > metrics["test_elbo_nats"] - 5
    if own_metric:
        assert own_metric in metrics
    budget = metrics["budget"]
    assert budget["epochs"] == 1 and budget["loglik_is_samples"] == 5
    assert budget["test_size"] in (10, 20) and budget["cpu_seconds"] > 0
    samples = np.load(tmp_path / "samples.npy")
    assert samples.shape == (12, pixels) and samples.dtype == np.float32
    assert samples.min() >= 0 and samples.max() <= 1
    for picture in ("samples.png", "reconstructions.png"):
        assert (tmp_path / picture).stat().st_size > 1000
    assert len(json.loads((tmp_path / "run.json").read_text())["history"]) == 1


def test_unknown_flow_is_refused_by_the_command_line(capsys):
    from models.latent import vae_flow
    with pytest.raises(SystemExit) as exit_:
        vae_flow.main(["--flow", "radial"])
    assert exit_.value.code == 2
    assert "--flow: invalid choice: 'radial' (choose from" in capsys.readouterr().err


def test_a_model_without_28x28_images_is_refused_before_training(monkeypatch, capsys, tmp_path):
    with pytest.raises(ValueError, match="conv_vae: the convolutional nets take 28x28 images; "
                                         "--data digits has 8x8 images"):
        run_main(monkeypatch, "conv_vae", ("build_gen", "build_q_net"),
                 ["--data", "digits", "--no-progress", "--out", str(tmp_path)])
    assert "Epoch" not in capsys.readouterr().out


def test_binarized_mnist_has_no_labels_for_the_cvae(monkeypatch, tmp_path):
    if not BMNIST.is_file():
        pytest.skip(f"binarized MNIST not found at {BMNIST}")
    with pytest.raises(SystemExit, match="cvae: --data binarized_mnist has no labels; use "
                                         "mnist or digits"):
        run_main(monkeypatch, "cvae", ("build_gen", "build_q_net"),
                 ["--data", "binarized_mnist", "--no-progress", "--out", str(tmp_path)])
