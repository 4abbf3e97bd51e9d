"""Each autoregressive zoo model runs a few steps from its command line and writes its outputs."""
import json

import numpy as np
import pytest

from models.data import data_root

needs_bmnist = pytest.mark.skipif(
    not (data_root() / "binarized_mnist" / "binarized_mnist.npz").is_file(),
    reason="binarized MNIST not found under $PPL_DATA/binarized_mnist")
needs_wine = pytest.mark.skipif(not (data_root() / "uci" / "wine-quality-red").is_dir(),
                                reason="UCI red wine not found under $PPL_DATA/uci")

SMALL = ["--epochs", "1", "--train-size", "64", "--test-size", "20", "--n-samples", "3",
         "--batch-size", "32", "--no-progress"]


@needs_bmnist
@pytest.mark.parametrize("name, options", [
    ("fvsbn", []),
    ("nade", ["--hidden", "6"]),
    ("made", ["--hidden", "16"]),
    ("made", ["--hidden", "16", "--masks", "2"]),
    ("pixelcnn", ["--channels", "4", "--layers", "2"]),
    ("wavenet", ["--channels", "4", "--layers", "3"]),
])
def test_image_model_writes_metrics_and_samples(name, options, tmp_path):
    module = __import__(f"models.autoregressive.{name}", fromlist=["main"])
    out = tmp_path / name
    module.main(SMALL + options + ["--out", str(out), "--checkpoint", str(tmp_path / "c.pt")])
    metrics = json.loads((out / "metrics.json").read_text())
    assert -784 * np.log(2) * 2 < metrics["test_loglik_nats"] < 0
    assert metrics["budget"]["epochs"] == 1 and metrics["budget"]["cpu_seconds"] > 0
    if "--masks" in options:
        assert metrics["test_loglik_nats_one_mask"] < 0
    samples = np.load(out / "samples.npy")
    assert samples.shape == (3, 784) and samples.dtype == np.float32
    assert set(np.unique(samples)) <= {0., 1.}
    assert (out / "samples.png").is_file() and (tmp_path / "c.pt").is_file()


@needs_wine
def test_rnade_writes_metrics(tmp_path):
    from models.autoregressive import rnade
    rnade.main(["--epochs", "2", "--hidden", "8", "--components", "2", "--no-progress",
                "--out", str(tmp_path)])
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert np.isfinite(metrics["test_loglik_nats"]) and "test_loglik_nats_raw" in metrics


@needs_bmnist
def test_a_finished_checkpoint_resumes_without_training_or_warnings(tmp_path):
    """The second run reads the checkpoint (its learning rate included: no warning that the
    optimizer settings changed) and trains no further: the same test log-likelihood."""
    import warnings

    from models.autoregressive import fvsbn
    argv = SMALL + ["--checkpoint", str(tmp_path / "c.pt")]
    first = fvsbn.main(argv + ["--out", str(tmp_path / "a")])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        second = fvsbn.main(argv + ["--out", str(tmp_path / "b")])
    assert second["test_loglik_nats"] == pytest.approx(first["test_loglik_nats"], abs=1e-4)


def test_best_weights_keep_the_best_epochs_state():
    import torch

    from models.autoregressive.common import BestWeights
    net = torch.nn.Linear(2, 1)
    best = BestWeights(net)
    first = {k: v.clone() for k, v in net.state_dict().items()}
    best.update(net, 1, -5.)
    with torch.no_grad():
        net.weight.add_(1.)
    best.update(net, 2, -6.)  # worse: the state of epoch 1 stays
    assert int(best.validated) == 2 and int(best.epoch) == 1 and float(best.score) == -5.
    best.restore(net)
    for name, value in net.state_dict().items():
        assert torch.equal(value, first[name])


@needs_bmnist
def test_validation_picks_the_best_epoch_and_resumes_exactly(tmp_path):
    """--valid-size scores every epoch; the test uses the best epoch's weights, which the
    checkpoint carries: a rerun on the finished checkpoint gives the same numbers."""
    from models.autoregressive import made
    argv = SMALL[2:] + ["--epochs", "2", "--hidden", "16", "--valid-size", "30",
                        "--checkpoint", str(tmp_path / "c.pt")]
    first = made.main(argv + ["--out", str(tmp_path / "a")])
    assert first["best_epoch"] in (1, 2) and first["valid_loglik_nats_best"] < 0
    second = made.main(argv + ["--out", str(tmp_path / "b")])
    assert second == {**first, "budget": second["budget"]}
    with pytest.raises(ValueError, match="--valid-size"):
        made.main(SMALL + ["--valid-size", "20000", "--out", str(tmp_path / "c")])


def test_a_run_stopped_before_its_validation_scores_that_epoch_on_resume(tmp_path):
    """Stopped between an epoch's checkpoint and its validation, the resumed run scores the
    epoch with the same weights: the same validation scores and best state as a run
    that never stopped."""
    import argparse

    import torch

    from models.autoregressive import common
    from models.autoregressive.made import MaskedMADE

    data = torch.rand(40, 8, generator=torch.Generator().manual_seed(0)).round()

    def run(path, stop_at=None):
        torch.manual_seed(0)
        net = MaskedMADE(8, [16])
        args = argparse.Namespace(epochs=3, lr=1e-2, batch_size=10, seed=0, no_progress=True,
                                  checkpoint=str(path))
        scores = []

        def log_lik(x):
            return common.build_model(net, value_shape=(8,), observed={"x": x}).log_joint()

        def validate():
            if len(scores) + 1 == stop_at:
                raise KeyboardInterrupt
            scores.append(common.mean_over(log_lik, data, progress=False))
            return scores[-1]
        modules = {"net": net, "best": common.BestWeights(net)}
        common.train(args, modules, common.log_lik_step(net, value_shape=(8,)), data,
                     {"test": 1}, validate=validate)
        return scores, net.state_dict(), modules["best"]

    whole, state, best = run(tmp_path / "a.pt")
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "b.pt", stop_at=2)
    resumed, resumed_state, resumed_best = run(tmp_path / "b.pt")
    assert resumed == whole[1:] and int(resumed_best.epoch) == int(best.epoch)
    assert float(resumed_best.score) == float(best.score) == max(whole)
    for name, value in state.items():
        torch.testing.assert_close(resumed_state[name], value, rtol=0, atol=0)


@needs_bmnist
def test_weight_decay_reaches_adam_and_the_run_settings(tmp_path):
    """--weight-decay is Adam's L2 penalty: a run with it records it and ends with other
    weights than the same run without it."""
    import torch

    from models.autoregressive import made
    argv = SMALL[2:] + ["--epochs", "1", "--hidden", "16"]
    plain = made.main(argv + ["--out", str(tmp_path / "a"), "--checkpoint", str(tmp_path / "a.pt")])
    decayed = made.main(argv + ["--weight-decay", "0.1", "--out", str(tmp_path / "b"),
                                "--checkpoint", str(tmp_path / "b.pt")])
    assert decayed["budget"]["weight_decay"] == 0.1 and "weight_decay" not in plain["budget"]
    from inference import checkpoint
    a, b = (checkpoint.load(tmp_path / name)["modules"]["net"] for name in ("a.pt", "b.pt"))
    assert not torch.equal(a["made.net.0.weight"], b["made.net.0.weight"])
    assert checkpoint.load(tmp_path / "b.pt")["optimizer"]["param_groups"][0]["weight_decay"] == 0.1
