"""`Trainer`: exact resume from checkpoints, the NaN guard, progress and history."""
import errno
import math
import multiprocessing
import warnings

import pytest
import torch
from torch import nn

import inference
import ppl
from inference import checkpoint
from inference.checkpoint import CheckpointError, CheckpointInUseError, CheckpointMismatchError

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


def _one_weight(value, lr, **trainer_options):
    """A scalar parameter `weight` (float32, starting at `value`) held by module 'm', and a
    Trainer updating it by SGD at `lr`, without a progress bar: (weight, trainer)."""
    weight = nn.Parameter(torch.tensor(float(value)))
    module = nn.Module()
    module.weight = weight
    return weight, inference.Trainer({"m": module}, torch.optim.SGD([weight], lr=lr),
                                     progress=False, **trainer_options)


def test_nonfinite_gradient_is_caught_before_the_update():
    weight, trainer = _one_weight(0., lr=0.1)
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


# -- checkpoints: fingerprints, resumed options, one writer, full disk, overflow -----------
def _fit_to_checkpoint(path, data, epochs=1, **kwargs):
    gen, q_net = _templates()
    trainer = _trainer(gen, q_net, checkpoint_path=path, **kwargs)
    return trainer.fit(_step_fn(gen, q_net), _batches(data), epochs)


def test_resume_on_batches_of_another_shape_names_the_batch(tmp_path):
    path = tmp_path / "checkpoint.pt"
    _fit_to_checkpoint(path, _data())
    gen, q_net = _templates()
    wider = torch.randn(N_DATA, 3, dtype=torch.float64)
    with pytest.raises(CheckpointMismatchError) as error:
        _trainer(gen, q_net, checkpoint_path=path).fit(_step_fn(gen, q_net),
                                                        _batches(wider), 2)
    message = str(error.value)
    assert "batch.dtype: 'torch.float32' in the checkpoint, now 'torch.float64'" in message
    assert "batch.shape: ['n', 2] in the checkpoint, now ['n', 3]" in message
    assert f"delete {path}" in message


def test_resume_with_another_model_or_optimizer_names_what_differs(tmp_path):
    path = tmp_path / "checkpoint.pt"
    _fit_to_checkpoint(path, _data())

    @ppl.meta_bayesian_net(scope="gen")
    def gen(n, k):  # as _templates' but without the decoder's bias
        bn = ppl.BayesianNet()
        z = bn.normal("z", torch.zeros(n, 1), std=1., group_ndims=1, n_samples=k)
        loc = ppl.module("decoder", lambda: nn.Linear(1, 2, bias=False))(z)
        bn.normal("x", loc, logstd=ppl.param("logstd", torch.zeros(2)), group_ndims=1)
        return bn
    _, q_net = _templates()

    def step(x):
        lower_bound = inference.elbo(gen(len(x), K), {"x": x},
                                     variational=q_net(x, K), axis=0)
        return -lower_bound.tensor.mean(), lower_bound
    trainer = inference.Trainer({"model": gen, "guide": q_net},
                                lambda params: torch.optim.SGD(params, lr=0.05),
                                checkpoint_path=path, progress=False)
    with pytest.raises(CheckpointMismatchError) as error:
        trainer.fit(step, _batches(_data()), 2)
    message = str(error.value)
    assert "modules.model.layers.decoder.bias: {'shape': [2], 'dtype': 'torch.float32'} in " \
           "the checkpoint, not given now" in message
    assert "optimizer: 'torch.optim.adam.Adam' in the checkpoint, now " \
           "'torch.optim.sgd.SGD'" in message


def test_resume_on_other_data_of_the_same_shape_is_refused(tmp_path):
    """The caller's `fingerprint=` parts: here the training data, hashed."""
    path, data = tmp_path / "checkpoint.pt", _data()
    _fit_to_checkpoint(path, data, fingerprint={"data": data, "settings": {"k": K}})
    other = data.clone()
    other[3, 1] += 1.
    gen, q_net = _templates()
    trainer = _trainer(gen, q_net, checkpoint_path=path,
                       fingerprint={"data": other, "settings": {"k": K}})
    with pytest.raises(CheckpointMismatchError, match=r"data\.sha256: '[0-9a-f]+' in the "
                                                      r"checkpoint, now '[0-9a-f]+'"):
        trainer.fit(_step_fn(gen, q_net), _batches(other), 2)
    gen, q_net = _templates()  # the same data resumes
    trainer = _trainer(gen, q_net, checkpoint_path=path,
                       fingerprint={"data": data.clone(), "settings": {"k": K}})
    assert len(trainer.fit(_step_fn(gen, q_net), _batches(data), 2)) == 2


def _diverging(lr, path, n_epochs=10):
    """SGD on (w - 1)^2 in float64, checkpointed every epoch of 10 steps: at lr 1e3, w grows
    ~2000x per step until the cost is inf (epoch 5); at lr 0.5, w = 1 after one step."""
    module = nn.Module()
    module.w = nn.Parameter(torch.zeros((), dtype=torch.float64))
    trainer = inference.Trainer({"m": module}, lambda params: torch.optim.SGD(params, lr=lr),
                                checkpoint_path=path, progress=False)
    history = trainer.fit(lambda batch: (((module.w - 1.) ** 2) * batch, None),
                          [torch.ones((), dtype=torch.float64)] * 10, n_epochs)
    return history, trainer, module


def test_a_smaller_lr_given_on_resume_after_a_nan_stop_wins_and_is_reported(tmp_path):
    path = tmp_path / "checkpoint.pt"
    with pytest.raises(FloatingPointError, match="non-finite cost .* at epoch 5"):
        _diverging(1e3, path)
    with pytest.warns(UserWarning, match=r"resuming from .*checkpoint\.pt with the optimizer "
                                         r"settings given now: lr 0\.5 \(the checkpoint had "
                                         r"1000\.0\)"):
        history, trainer, module = _diverging(0.5, path)
    assert trainer.optimizer.param_groups[0]["lr"] == 0.5
    assert len(history) == 10 and float(module.w.detach()) == 1. and history[-1] == 0.


def test_resume_with_the_same_settings_does_not_warn(tmp_path):
    path = tmp_path / "checkpoint.pt"
    _fit_to_checkpoint(path, _data())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(_fit_to_checkpoint(path, _data(), epochs=2)) == 2


def test_an_update_that_overflows_is_never_checkpointed(tmp_path):
    path = tmp_path / "checkpoint.pt"
    weight, trainer = _one_weight(1., lr=10., checkpoint_path=path, checkpoint_every=1)
    # the second step's gradient, 3e38, times lr 10 overflows float32: weight -> -inf
    with pytest.raises(FloatingPointError, match=r"parameter 'm\.weight' holds NaN/inf after "
                                                 r"step 2.*was not written"):
        trainer.fit(lambda scale: (weight * scale, None), [torch.tensor(1e-3),
                                                          torch.tensor(3e38)], 1)
    saved = torch.load(path, weights_only=True)
    assert saved["global_step"] == 1
    assert torch.isfinite(saved["modules"]["m"]["weight"])


def test_epochs_without_batches_are_an_error():
    gen, q_net = _templates()
    with pytest.raises(ValueError, match="epoch 1 gave no batches: is the data loader empty"):
        _trainer(gen, q_net).fit(_step_fn(gen, q_net), [], 2)
    with pytest.raises(ValueError, match="epoch 2 gave no batches"):  # a spent iterator
        _trainer(gen, q_net).fit(_step_fn(gen, q_net), iter(_batches(_data())(0)), 2)


def test_a_nan_objective_with_a_finite_cost_stops_before_the_update():
    weight, trainer = _one_weight(1., lr=0.1)
    with pytest.raises(FloatingPointError, match=r"non-finite objective \(nan\) at epoch 1, "
                                                 r"step 1.*no update was applied"):
        trainer.fit(lambda batch: (weight ** 2, torch.full((3,), math.nan)), [None], 1)
    assert float(weight.detach()) == 1.


def _hold_lock(path, locked, release):
    with checkpoint.writer_lock(path):
        locked.set()
        release.wait(60)


def test_a_second_process_on_the_same_checkpoint_is_refused(tmp_path):
    path = tmp_path / "checkpoint.pt"
    _fit_to_checkpoint(path, _data())
    before = path.read_bytes()
    context = multiprocessing.get_context("fork")
    locked, release = context.Event(), context.Event()
    other = context.Process(target=_hold_lock, args=(str(path), locked, release))
    other.start()
    try:
        assert locked.wait(60)
        gen, q_net = _templates()
        with pytest.raises(CheckpointInUseError, match="in use by another run"):
            _trainer(gen, q_net, checkpoint_path=path).fit(_step_fn(gen, q_net),
                                                            _batches(_data()), 2)
    finally:
        release.set()
        other.join(60)
    assert path.read_bytes() == before
    assert len(_fit_to_checkpoint(path, _data(), epochs=2)) == 2  # free again


def test_a_full_disk_keeps_the_last_checkpoint_and_says_so(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    _fit_to_checkpoint(path, _data())
    before = path.read_bytes()

    def full_disk(obj, file):
        file.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(CheckpointError, match="could not write the checkpoint .*No space left "
                                              "on device.*intact"):
        _fit_to_checkpoint(path, _data(), epochs=2)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt", "checkpoint.pt.lock"]


def test_a_damaged_checkpoint_names_the_file(tmp_path):
    path = tmp_path / "checkpoint.pt"
    _fit_to_checkpoint(path, _data())
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(CheckpointError, match=f"{path} is damaged.*delete"):
        _fit_to_checkpoint(path, _data(), epochs=2)
