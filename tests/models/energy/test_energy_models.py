"""The energy models of the zoo: written-out conditionals against enumeration, the DBN's
normalizer, and each model's command line on a few steps of binarized MNIST."""
import json

import numpy as np
import pytest
import torch

from inference import energy
from models.data import data_root
from models.energy import bm, common, dbm, dbn, rbm
from tests.inference._energy_models import block_conditional_by_enumeration, states


def _randomize(template, scale=1.):
    torch.manual_seed(0)
    with torch.no_grad():
        for param in template.parameters():
            param.copy_(scale * torch.randn_like(param))


def _small_models():
    rbm_template = common.rbm_template("t_rbm", 6, 3)
    top_template = common.rbm_template("t_top", 4, 3, visible="h1", hidden="h2")
    dbm_template, dbm_model = dbm.dbm_model(5, 3, 2)
    for template in (rbm_template, top_template, dbm_template):
        _randomize(template)
    return {"rbm": common.rbm_model(rbm_template),
            "dbn-top": common.rbm_model(top_template, "h1", "h2"),
            "dbm": dbm_model}


@pytest.mark.parametrize("name", ["rbm", "dbn-top", "dbm"])
def test_written_out_conditionals_match_enumeration(name):
    model = _small_models()[name]
    assert set(model.given) == set(model.layers)   # every conditional is written out
    values = {layer: torch.bernoulli(torch.full((5, n), 0.5)) for layer, n in model.layers.items()}
    for layer, n in model.layers.items():
        exact = block_conditional_by_enumeration(model, layer, values)
        claimed = model.conditional(layer, values).log_prob(states(n, torch.float32)[:, None])
        torch.testing.assert_close(claimed.exp().double(), exact, atol=1e-5, rtol=1e-4)


def test_the_dbn_is_normalized_by_its_top_rbm():
    bottom = common.rbm_template("t_bottom", 5, 3)
    top = common.rbm_template("t_top2", 3, 2, visible="h1", hidden="h2")
    _randomize(bottom)
    _randomize(top)
    with torch.no_grad():
        whole = energy.exact_log_partition(dbn.dbn_model(bottom, top))
        assert whole.item() == pytest.approx(
            energy.exact_log_partition(common.rbm_model(top, "h1", "h2")).item(), abs=1e-4)


def test_the_boltzmann_machine_has_no_blocks_and_its_likelihood_is_exact():
    template, model = bm.bm_model(4, 2)
    _randomize(template)
    values = {"v": torch.ones(3, 4), "h": torch.ones(3, 2)}
    with pytest.raises(ValueError, match="layer 'v': the conditional does not match"):
        model.check(values)
    v = states(4, torch.float32)
    with torch.no_grad():
        p = bm.log_likelihood(model, energy.exact_log_partition(model), v).exp()
    assert p.sum().item() == pytest.approx(1., abs=1e-5)


MNIST = data_root() / "binarized_mnist" / "binarized_mnist.npz"


@pytest.mark.skipif(not MNIST.is_file(), reason=f"binarized MNIST not found at {MNIST}")
@pytest.mark.parametrize("module,extra", [
    (rbm, ["--n-hidden", "20", "--persistent"]),
    (rbm, ["--n-hidden", "20", "--cd-k", "2"]),
    (dbn, ["--n-hidden", "20", "--n-hidden2", "15", "--is-samples", "3"]),
    (dbm, ["--n-hidden", "20", "--n-hidden2", "15", "--n-chains", "20"]),
    (bm, ["--n-hidden", "1"]),
], ids=["rbm-pcd", "rbm-cd2", "dbn", "dbm", "bm"])
def test_each_model_runs_a_few_steps_from_its_command_line(module, extra, tmp_path):
    out = tmp_path / "run"
    argv = ["--out", str(out), "--train-size", "200", "--test-size", "50", "--epochs", "1",
            "--batch-size", "100", "--gibbs-steps", "3", "--n-samples", "8", "--no-progress",
            *extra]
    if module is not bm:
        argv += ["--n-temperatures", "20", "--ais-runs", "4"]
    metrics = module.main(argv)
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["test_loglik_nats"] == pytest.approx(metrics["test_loglik_nats"])
    assert -800 < saved["test_loglik_nats"] < 0
    samples = np.load(out / "samples.npy")
    assert samples.shape == (8, 784) and samples.min() >= 0 and samples.max() <= 1


def test_bad_arguments_are_refused(tmp_path):
    with pytest.raises(SystemExit):
        rbm.main(["--out", str(tmp_path), "--cd-k", "0"])
