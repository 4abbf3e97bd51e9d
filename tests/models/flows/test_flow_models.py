"""The flow zoo: each model runs a few steps from its command line and writes its outputs."""
import json

import numpy as np
import pytest

from models.data import data_root

MNIST = data_root() / "mnist"
FASHION = data_root() / "fashion-mnist"
UCI_POWER = data_root() / "uci" / "power-plant"
needs_mnist = pytest.mark.skipif(not MNIST.is_dir(), reason=f"MNIST not found at {MNIST}")
SMALL = ["--epochs", "1", "--train-size", "48", "--test-size", "10", "--n-samples", "6",
         "--batch-size", "16", "--no-progress"]


def run(module, args, out):
    import importlib
    importlib.import_module(f"models.flows.{module}").main([*args, "--out", str(out), *SMALL])
    metrics = json.loads((out / "metrics.json").read_text())
    return metrics, np.load(out / "samples.npy")


def check_images(metrics, samples, names=("test_bits_per_dim", "test_loglik_logit_nats")):
    for name in names:
        assert np.isfinite(metrics[name])
    assert metrics["test_bits_per_dim"] > 0 and metrics["test_loglik_logit_nats"] < 0
    assert metrics["budget"]["epochs"] == 1 and metrics["budget"]["cpu_seconds"] > 0
    assert samples.shape == (6, 784) and samples.dtype == np.float32
    assert samples.min() >= 0 and samples.max() <= 1


@needs_mnist
@pytest.mark.parametrize("module, args", [
    ("nice", ["--hidden", "16", "--depth", "1"]),
    ("realnvp", ["--hidden", "4"]),
    ("glow", ["--hidden", "4", "--steps", "1"]),
    ("maf", ["--hidden", "16", "--layers", "2"]),
])
def test_image_flow_runs_from_its_command_line(module, args, tmp_path):
    metrics, samples = run(module, args, tmp_path / module)
    check_images(metrics, samples)
    assert (tmp_path / module / "samples.png").is_file()


@pytest.mark.skipif(not FASHION.is_dir(), reason=f"Fashion-MNIST not found at {FASHION}")
def test_glow_on_fashion_mnist(tmp_path):
    metrics, samples = run("glow", ["--data", "fashion-mnist", "--hidden", "4", "--steps", "1"],
                           tmp_path)
    check_images(metrics, samples)
    assert metrics["budget"]["data"] == "fashion-mnist"


@needs_mnist
def test_vflow_reports_its_bound_and_an_importance_sampled_likelihood(tmp_path):
    metrics, samples = run("vflow", ["--hidden", "4", "--steps", "1", "--is-samples", "4"],
                           tmp_path)
    check_images(metrics, samples)
    assert np.isfinite(metrics["test_elbo_bits_per_dim"])
    assert np.isfinite(metrics["test_elbo_logit_nats"])


@pytest.mark.skipif(not UCI_POWER.is_dir(), reason=f"UCI power-plant not found at {UCI_POWER}")
def test_maf_on_a_uci_table(tmp_path):
    metrics, samples = run("maf", ["--data", "power-plant", "--hidden", "8", "--layers", "2"],
                           tmp_path)
    assert np.isfinite(metrics["test_loglik_nats"]) and samples.shape == (6, 5)


@pytest.mark.parametrize("data", ["two-moons", "rings", "checkerboard"])
def test_toy_densities(data, tmp_path):
    metrics, samples = run("toy2d", ["--data", data, "--hidden", "8", "--layers", "2"],
                           tmp_path)
    assert np.isfinite(metrics["test_loglik_nats"]) and samples.shape == (6, 2)
    assert (tmp_path / "density.png").is_file()


def test_maf_samples_stay_finite_when_a_layer_asks_for_a_huge_scale():
    """Sampling runs each MADE on its own outputs, off the data it was fit to; an unbounded
    log-scale there reached exp(a) = inf (MAF on MNIST after 120 CPU s). maf_transforms
    bounds it (|a| < MAX_LOG_SCALE), so the samples stay finite."""
    import torch

    from models.flows.common import FlowModel
    from models.flows.maf import MAX_LOG_SCALE, maf_transforms
    from ppl.flows import MaskedAutoregressive

    torch.manual_seed(0)
    flow = FlowModel(maf_transforms(6, n_layers=2, hidden=(16,), batch_norm=False))
    for layer in flow.transforms:
        if isinstance(layer, MaskedAutoregressive):
            layer.made.output.bias.data.fill_(100.)       # log-scales of 100 before the bound
            _, log_scale = layer._shift_and_log_scale(torch.zeros(1, 6))
            assert log_scale.abs().max() < MAX_LOG_SCALE
    assert torch.isfinite(flow.sample(50)).all()
