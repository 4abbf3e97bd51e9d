"""`Trainer`: exact resume from checkpoints, the NaN guard, progress and history."""
import math

import pytest
import torch
from torch import nn

import inference
import ppl

N_DATA, BATCH, EPOCHS, K = 24, 6, 3, 2


def _templates():
    """Fresh model and guide templates (parameters made on first call)."""
    @ppl.meta_bayesian_net(scope="gen")
    def gen(n, k):
        bn = ppl.BayesianNet()
        z = bn.normal("z", torch.zeros(n, 1), std=1., group_ndims=1, n_samples=k)
        loc = ppl.module("decoder", lambda: nn.Linear(1, 2))(z)
        bn.normal("x", loc, logstd=ppl.param("logstd", torch.zeros(2)), group_ndims=1)
        return bn

    @ppl.reuse_variables(scope="q")
    def q_net(x, k):
        bn = ppl.BayesianNet()
        h = ppl.module("encoder", lambda: nn.Linear(2, 2))(x)
        bn.normal("z", h[:, :1], logstd=h[:, 1:], group_ndims=1, n_samples=k,
                  is_reparameterized=False)
        return bn
    return gen, q_net


def _data():
    return torch.randn(N_DATA, 2, generator=torch.Generator().manual_seed(5)) * 2. + 1.


def _batches(data):
    """A callable epoch -> batches, shuffled with the global torch RNG."""
    def epoch_batches(epoch):
        order = torch.randperm(len(data))
        return [data[order[i:i + BATCH]] for i in range(0, len(data), BATCH)]
    return epoch_batches


def _step_fn(gen, q_net):
    """REINFORCE with the moving-average baseline kept in the model template."""
    def step(x):
        lower_bound = inference.elbo(gen(len(x), K), {"x": x}, variational=q_net(x, K), axis=0)
        return lower_bound.reinforce().mean(), lower_bound
    return step


def _trainer(gen, q_net, **kwargs):
    return inference.Trainer({"model": gen, "guide": q_net},
                             lambda params: torch.optim.Adam(params, lr=0.05),
                             progress=False, **kwargs)


def _state(gen, q_net):
    return {f"{name}.{key}": value.clone()
            for name, module in (("model", gen), ("guide", q_net))
            for key, value in module.state_dict().items()}


def test_resume_reproduces_the_uninterrupted_run_exactly(tmp_path):
    data = _data()
    torch.manual_seed(1)
    gen, q_net = _templates()
    reference = _trainer(gen, q_net)
    reference_history = reference.fit(_step_fn(gen, q_net), _batches(data), EPOCHS)
    reference_state = _state(gen, q_net)

    path = tmp_path / "run" / "checkpoint.pt"
    torch.manual_seed(1)
    gen, q_net = _templates()
    step, calls = _step_fn(gen, q_net), []

    def interrupted(x):
        calls.append(1)
        if len(calls) == 8:
            raise KeyboardInterrupt
        return step(x)
    with pytest.raises(KeyboardInterrupt):
        _trainer(gen, q_net, checkpoint_path=path, checkpoint_every=5).fit(
            interrupted, _batches(data), EPOCHS)
    saved = torch.load(path, weights_only=True)
    assert (saved["global_step"], saved["epoch"], saved["step_in_epoch"]) == (5, 1, 1)
    assert "layers.reinforce_moving_mean.value" in saved["modules"]["model"]

    torch.manual_seed(999)  # the checkpoint's RNG state must win over this
    gen, q_net = _templates()
    resumed = _trainer(gen, q_net, checkpoint_path=path, checkpoint_every=5)
    history = resumed.fit(_step_fn(gen, q_net), _batches(data), EPOCHS)

    assert [entry["step"] for entry in resumed.log] == list(range(6, 13))
    assert list(resumed.log) == list(reference.log)[5:]
    assert history == reference_history
    state = _state(gen, q_net)
    assert state.keys() == reference_state.keys()
    assert all(torch.equal(state[key], reference_state[key]) for key in state)
    assert not path.with_name(path.name + ".tmp").exists()


def test_a_finished_checkpoint_returns_its_history_and_more_epochs_continue(tmp_path):
    data, path = _data(), tmp_path / "checkpoint.pt"
    gen, q_net = _templates()
    first = _trainer(gen, q_net, checkpoint_path=path).fit(_step_fn(gen, q_net),
                                                           _batches(data), 1)
    gen, q_net = _templates()
    again = _trainer(gen, q_net, checkpoint_path=path)
    assert again.fit(_step_fn(gen, q_net), _batches(data), 1) == first and list(again.log) == []
    assert len(again.fit(_step_fn(gen, q_net), _batches(data), 2)) == 2
    assert len(again.log) == N_DATA // BATCH


def test_history_is_the_mean_bound_per_epoch():
    data = _data()
    gen, q_net = _templates()
    trainer = _trainer(gen, q_net)
    history = trainer.fit(_step_fn(gen, q_net), _batches(data), 2)
    steps = N_DATA // BATCH
    for epoch, bound in enumerate(history):
        entries = list(trainer.log)[epoch * steps:(epoch + 1) * steps]
        assert bound == pytest.approx(sum(e["bound"] for e in entries) / steps)


def test_nan_guard_names_the_node_and_applies_no_update():
    """A decoder that blew up (an infinite bias) makes log p(x | z) non-finite."""
    data = _data()
    gen, q_net = _templates()
    trainer = _trainer(gen, q_net)
    step = _step_fn(gen, q_net)
    trainer.step(step, data[:BATCH])
    with torch.no_grad():
        gen.layers["decoder"].bias[1] = math.inf
    before = _state(gen, q_net)
    optimizer_before = trainer.optimizer.state_dict()["state"][0]["step"].clone()
    with pytest.raises(FloatingPointError, match="node 'x'.*no update was applied"):
        trainer.step(step, data[:BATCH])
    after = _state(gen, q_net)
    assert all(torch.equal(before[key], after[key]) for key in before)
    assert torch.equal(trainer.optimizer.state_dict()["state"][0]["step"], optimizer_before)


def test_nonfinite_gradient_is_caught_before_the_update():
    weight = nn.Parameter(torch.zeros(()))
    module = nn.Module()
    module.weight = weight
    trainer = inference.Trainer({"m": module}, torch.optim.SGD([weight], lr=0.1),
                                progress=False)
    with pytest.raises(FloatingPointError, match="gradient of parameter 'm.weight'"):
        trainer.step(lambda batch: (torch.sqrt(weight * 0.), None), None)
    assert weight.grad is None and float(weight.detach()) == 0.


def test_a_layer_created_after_the_first_step_is_an_error():
    """The optimizer would never train it: the trainer notices the template's new layer."""
    @ppl.reuse_variables(scope="late")
    def grows(batch, step):
        weight = ppl.module("first", lambda: nn.Linear(1, 1))(batch)
        if step > 0:
            weight = weight + ppl.module("second", lambda: nn.Linear(1, 1))(batch)
        return weight.sum()

    trainer = inference.Trainer({"m": grows}, lambda p: torch.optim.SGD(p, lr=0.1),
                                progress=False)
    batch = torch.ones(2, 1)
    trainer.step(lambda b: (grows(b, 0), None), batch)
    trainer.step(lambda b: (grows(b, 0), None), batch)
    with pytest.raises(RuntimeError, match="now have 4 parameters.*made with 2"):
        trainer.step(lambda b: (grows(b, 1), None), batch)


def test_nonfinite_gradient_in_one_of_several_dtypes_is_named():
    module = nn.Module()
    module.a = nn.Parameter(torch.ones(3))
    module.b = nn.Parameter(torch.ones(2, dtype=torch.float64))
    trainer = inference.Trainer({"m": module}, torch.optim.SGD(module.parameters(), lr=0.1),
                                progress=False)
    trainer.step(lambda batch: ((module.a.sum() + module.b.sum()).float(), None), None)
    with pytest.raises(FloatingPointError, match="gradient of parameter 'm.b'"):
        trainer.step(lambda batch: ((module.a.sum() + torch.sqrt(module.b * 0.).sum()).float(),
                                    None), None)
    assert module.b.grad is None and torch.equal(module.b.detach(),
                                                 torch.full((2,), 1. - 0.1, dtype=torch.float64))


def test_progress_bar_shows_the_running_bound(capsys):
    data = _data()
    gen, q_net = _templates()
    trainer = inference.Trainer({"model": gen, "guide": q_net},
                                lambda params: torch.optim.Adam(params, lr=0.05))
    trainer.fit(_step_fn(gen, q_net), _batches(data), 1)
    assert "bound=" in capsys.readouterr().err


def test_bad_arguments():
    gen, q_net = _templates()
    with pytest.raises(TypeError, match="`modules`"):
        inference.Trainer([gen], lambda params: None)
    with pytest.raises(TypeError, match="`optimizer`"):
        inference.Trainer({"model": gen}, "adam")
    with pytest.raises(ValueError, match="`checkpoint_every` needs a `checkpoint_path`"):
        inference.Trainer({"model": gen}, lambda params: None, checkpoint_every=3)
    trainer = _trainer(gen, q_net)
    with pytest.raises(TypeError, match="must return \\(cost, objective\\)"):
        trainer.step(lambda batch: torch.zeros(()), None)
    with pytest.raises(ValueError, match="cost must be a scalar"):
        trainer.step(lambda batch: (torch.zeros(3), None), None)
