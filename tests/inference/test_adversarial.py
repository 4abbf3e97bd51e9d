"""`inference.adversarial`: the GAN and Wasserstein losses, WGAN-GP's penalty, weight clipping,
the alternating updates, exact resume of both players, the NaN guard and bad input."""
import pytest
import torch
from torch import nn

import inference
import ppl
from inference import adversarial

N_DATA, BATCH, Z_DIM, X_DIM = 24, 6, 2, 3


def _generator(with_output=True):
    """A fresh generator template: z ~ N(0, I) [n, 2], x = Linear(z) [n, 3]."""
    @ppl.meta_bayesian_net(scope="gen")
    def gen(n):
        bn = ppl.BayesianNet()
        z = bn.normal("z", torch.zeros(n, Z_DIM), std=1., group_ndims=1)
        x = ppl.module("g", lambda: nn.Linear(Z_DIM, X_DIM))(z)
        bn.output("x" if with_output else "h", x)
        return bn
    return gen


def _critic(in_dim=X_DIM):
    return nn.Sequential(nn.Linear(in_dim, 8), nn.Tanh(), nn.Linear(8, 1))


def _data():
    return torch.randn(N_DATA, X_DIM, generator=torch.Generator().manual_seed(5)) + 2.


def _batches(data):
    def epoch_batches(epoch):
        order = torch.randperm(len(data))
        return [data[order[i:i + BATCH]] for i in range(0, len(data), BATCH)]
    return epoch_batches


def _trainer(gen, critic, **kwargs):
    kwargs.setdefault("progress", False)
    return inference.AdversarialTrainer(
        gen, critic, lambda x: gen(len(x)),
        (lambda p: torch.optim.Adam(p, 1e-2), lambda p: torch.optim.Adam(p, 1e-2)), **kwargs)


def test_losses_match_hand_formulas():
    real, fake = torch.tensor([0.3, -1.2, 2.0]), torch.tensor([-0.5, 0.7])
    d_real, d_fake = torch.sigmoid(real), torch.sigmoid(fake)
    expected = -torch.log(d_real).mean() - torch.log(1 - d_fake).mean()
    for loss in ("minimax", "non_saturating"):
        assert torch.allclose(adversarial.critic_loss(real, fake, loss), expected)
    assert torch.allclose(adversarial.generator_loss(fake, "minimax"),
                          torch.log(1 - d_fake).mean())
    assert torch.allclose(adversarial.generator_loss(fake, "non_saturating"),
                          -torch.log(d_fake).mean())
    assert torch.allclose(adversarial.critic_loss(real, fake, "wasserstein"),
                          fake.mean() - real.mean())
    assert torch.allclose(adversarial.generator_loss(fake, "wasserstein"), -fake.mean())
    with pytest.raises(ValueError, match="`loss` must be one of"):
        adversarial.critic_loss(real, fake, "hinge")


def test_gradient_penalty_matches_hand_computation():
    a = torch.tensor([1., 2., -1.])
    critic = nn.Linear(3, 1, bias=False)
    with torch.no_grad():
        critic.weight.copy_(a)
    real, fake = torch.randn(4, 3), torch.randn(4, 3)
    # A linear critic's gradient is its weight at every point: (|a| - 1)^2.
    penalty = adversarial.gradient_penalty(critic, real, fake)
    assert torch.allclose(penalty, (a.norm() - 1) ** 2)

    class Quadratic(nn.Module):  # f(x) = 0.5 sum_j a_j x_j^2: grad = a * x_hat
        def forward(self, x):
            return 0.5 * (a * x ** 2).sum(-1)
    eps = torch.tensor([0., 0.25, 0.5, 1.])
    x_hat = eps[:, None] * real + (1 - eps[:, None]) * fake
    expected = (((a * x_hat).norm(dim=1) - 1) ** 2).mean()
    assert torch.allclose(adversarial.gradient_penalty(Quadratic(), real, fake, eps=eps), expected)
    # differentiable in the critic's weights: d/da (|a| - 1)^2 = 2 (|a| - 1) a / |a|
    penalty.backward()
    assert torch.allclose(critic.weight.grad[0], 2 * (a.norm() - 1) * a / a.norm())


def test_alternation_and_weight_clipping():
    data = _data()
    gen, critic = _generator(), _critic()
    trainer = _trainer(gen, critic, loss="wasserstein", n_critic=2, clip=0.05)
    trainer.fit(_batches(data), n_epochs=1)
    # 4 real batches: 4 critic updates and 2 generator updates
    assert len(trainer.trainer.log) == 6
    assert all(p.abs().max() <= 0.05 for p in critic.parameters())
    # more critic updates asked per generator update than batches: the generator stays put
    gen, critic = _generator(), _critic()
    trainer = _trainer(gen, critic, n_critic=5)
    gen(1).observe()
    before = [p.detach().clone() for p in gen.parameters()]
    critic_before = [p.detach().clone() for p in critic.parameters()]
    trainer.fit(_batches(data), n_epochs=1)
    assert all(torch.equal(b, p) for b, p in zip(before, gen.parameters()))
    assert not all(torch.equal(b, p) for b, p in zip(critic_before, critic.parameters()))


def _state(gen, critic, trainer):
    return ({k: v.clone() for k, v in gen.state_dict().items()},
            {k: v.clone() for k, v in critic.state_dict().items()},
            trainer.trainer.optimizer.state_dict())


def _assert_same(a, b):
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for key in a:
            _assert_same(a[key], b[key])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            _assert_same(x, y)
    elif isinstance(a, torch.Tensor):
        assert torch.equal(a, b)
    else:
        assert a == b


class _Interrupted(Exception):
    pass


def _interrupted_after(batches, n):
    """The same batches, but the run stops (an exception) once `n` of them were handed out."""
    given = [0]

    def epoch_batches(epoch):
        for batch in batches(epoch):
            if given[0] == n:
                raise _Interrupted
            given[0] += 1
            yield batch
    return epoch_batches


@pytest.mark.parametrize("stop_after", [4, 7])  # at an epoch's end; mid-epoch, mid-cycle
def test_exact_resume_of_both_players_and_optimizers(tmp_path, stop_after):
    data = _data()
    settings = {"loss": "wasserstein", "penalty_weight": 10., "n_critic": 3}
    torch.manual_seed(1)
    gen, critic = _generator(), _critic()
    full = _trainer(gen, critic, **settings)
    history = full.fit(_batches(data), n_epochs=3)
    expected = _state(gen, critic, full)

    torch.manual_seed(1)
    path = tmp_path / "wgan.pt"
    gen, critic = _generator(), _critic()
    with pytest.raises(_Interrupted):  # checkpoints every 2 updates (5 per epoch)
        _trainer(gen, critic, checkpoint_path=path, checkpoint_every=2, **settings).fit(
            _interrupted_after(_batches(data), stop_after), n_epochs=3)
    torch.manual_seed(99)  # the resumed run's own start differs; the checkpoint restores all
    gen, critic = _generator(), _critic()
    resumed = _trainer(gen, critic, checkpoint_path=path, **settings)
    assert resumed.fit(_batches(data), n_epochs=3) == history
    _assert_same(_state(gen, critic, resumed), expected)


def test_resume_with_other_settings_is_refused(tmp_path):
    path = tmp_path / "gan.pt"
    _trainer(_generator(), _critic(), checkpoint_path=path).fit(_batches(_data()), n_epochs=1)
    with pytest.raises(inference.checkpoint.CheckpointMismatchError, match="n_critic"):
        _trainer(_generator(), _critic(), checkpoint_path=path, n_critic=2).fit(
            _batches(_data()), n_epochs=2)


def test_bad_input_is_refused_naming_it():
    data = _data()
    with pytest.raises(ValueError, match="no output node 'x'"):
        _trainer(_generator(with_output=False), _critic()).fit([data[:6]], n_epochs=1)
    with pytest.raises(ValueError, match=r"critic failed on .*shape \(6, 3\)"):
        _trainer(_generator(), _critic(in_dim=5)).fit([data[:6]], n_epochs=1)
    wide = nn.Linear(X_DIM, 2)
    with pytest.raises(ValueError, match="one score per row"):
        _trainer(_generator(), wide).fit([data[:6]], n_epochs=1)
    with pytest.raises(ValueError, match="node 'x' has shape"):
        _trainer(_generator(), _critic()).fit([data[:6, :2]], n_epochs=1)
    for n_critic in (0, -1, 1.5):
        with pytest.raises(ValueError, match="`n_critic` must be an int >= 1"):
            _trainer(_generator(), _critic(), n_critic=n_critic)
    with pytest.raises(ValueError, match="`clip` .* needs loss='wasserstein'"):
        _trainer(_generator(), _critic(), clip=0.01)
    with pytest.raises(TypeError, match="`critic` must be an nn.Module"):
        inference.AdversarialTrainer(_generator(), lambda x: x, lambda x: x, (None, None))


def test_nan_generator_output_stops_naming_the_node():
    gen, critic = _generator(), _critic()
    trainer = _trainer(gen, critic)
    gen(1).observe()
    with torch.no_grad():
        gen.layers["g"].weight.fill_(float("nan"))
    before = [p.detach().clone() for p in critic.parameters()]
    with pytest.raises(FloatingPointError, match="output node 'x' holds NaN"):
        trainer.fit([_data()[:6]], n_epochs=1)
    assert all(torch.equal(b, p) for b, p in zip(before, critic.parameters()))
