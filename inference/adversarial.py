"""Adversarial training of an implicit model: a generator `MetaBayesianNet` against a critic.

    @ppl.meta_bayesian_net(scope="gen")
    def build_gen(n, z_dim):                       # x = G(z), z ~ p(z)
        bn = ppl.BayesianNet()
        z = bn.normal("z", torch.zeros(n, z_dim), std=1., group_ndims=1)
        bn.output("x", ppl.module("g", lambda: G(z_dim))(z))
        return bn

    trainer = inference.AdversarialTrainer(
        build_gen, critic, lambda x: build_gen(len(x), 40),
        optimizers=(lambda p: torch.optim.Adam(p, 2e-4), lambda p: torch.optim.Adam(p, 2e-4)),
        loss="wasserstein", penalty_weight=10., n_critic=5, checkpoint_path="runs/wgan.pt")
    history = trainer.fit(batches, n_epochs=10)    # per-epoch mean critic loss

A batch is the real images `x` [n, ...] or a tuple `(x, *conditions)`: the
model function gets the whole batch (a conditional generator reads its
labels), the critic is called as `critic(x, *conditions)` and returns one
score per row ([n] or [n, 1]; logits for the GAN losses).

Losses (each a mean over the batch; D = sigmoid(critic)):
- "minimax" (Goodfellow et al. 2014): critic -log D(x) - log(1 - D(G(z))),
  generator log(1 - D(G(z)));
- "non_saturating": the same critic, generator -log D(G(z));
- "wasserstein" (Arjovsky et al. 2017): critic E f(G(z)) - E f(x), generator
  -E f(G(z)); keep f Lipschitz by `clip=c` (weights clamped to [-c, c] after
  each critic update) or `penalty_weight=lambda` (WGAN-GP, Gulrajani et al.
  2017: lambda E (|grad f(x_hat)| - 1)^2 at random interpolates x_hat).

The loop is `inference.Trainer`'s: each real batch is one critic update, and
after every `n_critic` of them the generator takes one update (on the last
batch's size and conditions); progress bar, checkpoint/resume (both players,
both optimizers, the RNG, the turn within the epoch) and the NaN guard are
the Trainer's. The generator's output node holding NaN/inf, or the critic's
scores, stop training naming it before any update.
"""
import torch
from torch import nn

from inference.trainer import Trainer

__all__ = ["AdversarialTrainer", "PlayerOptimizers", "make_optimizer", "LOSSES", "critic_loss", "generator_loss", "gradient_penalty",
           "clip_weights"]

LOSSES = ("minimax", "non_saturating", "wasserstein")
_CRITIC, _GENERATOR = "critic", "generator"


def _check_loss(loss):
    if loss not in LOSSES:
        raise ValueError(f"`loss` must be one of {', '.join(map(repr, LOSSES))}, got {loss!r}")


def critic_loss(real_scores, fake_scores, loss="non_saturating"):
    """The critic's (discriminator's) loss for scores of real and generated rows [n]."""
    _check_loss(loss)
    if loss == "wasserstein":
        return fake_scores.mean() - real_scores.mean()
    softplus = nn.functional.softplus  # -log sigmoid(s) = softplus(-s)
    return softplus(-real_scores).mean() + softplus(fake_scores).mean()


def generator_loss(fake_scores, loss="non_saturating"):
    """The generator's loss for the critic's scores of generated rows [n]."""
    _check_loss(loss)
    if loss == "wasserstein":
        return -fake_scores.mean()
    if loss == "minimax":  # log(1 - sigmoid(s)) = -softplus(s)
        return -nn.functional.softplus(fake_scores).mean()
    return nn.functional.softplus(-fake_scores).mean()


def gradient_penalty(critic, real, fake, *conditions, eps=None):
    """WGAN-GP's E (||grad_x f(x_hat)||_2 - 1)^2, x_hat = eps x + (1 - eps) G(z).

    `eps` [n] ~ U(0, 1) per row unless given. Differentiable in the critic's
    parameters (the gradient is taken with `create_graph=True`).
    """
    if eps is None:
        eps = torch.rand(len(real), device=real.device, dtype=real.dtype)
    eps = eps.reshape(-1, *([1] * (real.dim() - 1)))
    with torch.enable_grad():  # also when called to build layers under no_grad (a resume)
        x_hat = (eps * real.detach() + (1 - eps) * fake.detach()).requires_grad_(True)
        scores = critic(x_hat, *conditions).reshape(-1)
        grad, = torch.autograd.grad(scores.sum(), x_hat, create_graph=True)
    return ((grad.reshape(len(grad), -1).norm(dim=1) - 1) ** 2).mean()


@torch.no_grad()
def clip_weights(module, clip):
    """Clamp every parameter of `module` to [-clip, clip] in place (WGAN)."""
    for param in module.parameters():
        param.clamp_(-clip, clip)


class PlayerOptimizers:
    """Several players' optimizers as one, for `Trainer`: `step` updates only the player
    whose turn it is, `turn()` (a cost reaches the other players' parameters too), then
    calls `after_step(player)` (WGAN clips its critic's weights there); the state holds
    every optimizer. `optimizers`: player name -> torch optimizer."""

    def __init__(self, optimizers, turn, after_step=None):
        self.players, self._turn, self._after_step = dict(optimizers), turn, after_step

    @property
    def param_groups(self):
        return [group for opt in self.players.values() for group in opt.param_groups]

    def zero_grad(self, set_to_none=True):
        for opt in self.players.values():
            opt.zero_grad(set_to_none=set_to_none)

    def step(self):
        turn = self._turn()
        self.players[turn].step()
        if self._after_step is not None:
            self._after_step(turn)

    def state_dict(self):
        return {name: opt.state_dict() for name, opt in self.players.items()}

    def load_state_dict(self, state):
        for name, opt in self.players.items():
            opt.load_state_dict(state[name])


def make_optimizer(optimizer, params, which):
    """`optimizer` itself, or the factory `optimizer` called on `params`."""
    if isinstance(optimizer, torch.optim.Optimizer):
        return optimizer
    if callable(optimizer):
        return optimizer(list(params))
    raise TypeError(f"`optimizers`: the {which}'s must be a torch optimizer or a factory "
                    f"params -> optimizer, got {type(optimizer).__name__}")


class _Turns:
    """An epoch's turns: ("critic", batch) for each real batch, and ("generator", batch)
    after every `n_critic` of them."""

    def __init__(self, batches, n_critic):
        self.batches, self.n_critic = batches, n_critic

    def __call__(self, epoch):
        batches = self.batches(epoch) if callable(self.batches) else self.batches
        for index, batch in enumerate(batches):
            yield _CRITIC, batch
            if (index + 1) % self.n_critic == 0:
                yield _GENERATOR, batch


class _SizedTurns(_Turns):
    """`_Turns` of batches with a length: the progress bar shows the epoch's total."""

    def __len__(self):
        n = len(self.batches)
        return n + n // self.n_critic


class AdversarialTrainer:
    """Trains `generator` (a model template) against `critic` (an nn.Module).

    `model(batch) -> MetaBayesianNet` binds the generator for a batch; its node
    `output` holds the generated rows, shaped like the batch's `x`.
    `optimizers`: (generator's, critic's), each a torch optimizer or a factory
    params -> optimizer. `loss`: one of `LOSSES`; `clip` and `penalty_weight`
    (Wasserstein only) keep the critic Lipschitz. The remaining arguments are
    `inference.Trainer`'s; `fingerprint` gets the loss settings added.
    `self.trainer.log` holds one dict per update: its "bound" is the critic's loss.
    """

    def __init__(self, generator, critic, model, optimizers, *, output="x",
                 loss="non_saturating", n_critic=1, clip=None, penalty_weight=None,
                 checkpoint_path=None, checkpoint_every=None, progress=True, resume=True,
                 fingerprint=None):
        for name, module in (("generator", generator), ("critic", critic)):
            if not isinstance(module, nn.Module):
                raise TypeError(f"`{name}` must be an nn.Module (the generator: its model "
                                f"template), got {type(module).__name__}")
        if not callable(model):
            raise TypeError(f"`model` must be a function batch -> MetaBayesianNet, got "
                            f"{type(model).__name__}")
        _check_loss(loss)
        if isinstance(n_critic, bool) or not isinstance(n_critic, int) or n_critic < 1:
            raise ValueError(f"`n_critic` must be an int >= 1 (critic updates per generator "
                             f"update), got {n_critic!r}")
        for name, value in (("clip", clip), ("penalty_weight", penalty_weight)):
            if value is not None and not (isinstance(value, (int, float)) and value > 0):
                raise ValueError(f"`{name}` must be None or a positive number, got {value!r}")
            if value is not None and loss != "wasserstein":
                raise ValueError(f"`{name}` keeps a Wasserstein critic Lipschitz: it needs "
                                 f"loss='wasserstein', got loss={loss!r}")
        if not isinstance(optimizers, (tuple, list)) or len(optimizers) != 2:
            raise TypeError("`optimizers` must be a pair (generator's, critic's), each an "
                            "optimizer or a factory params -> optimizer")
        self.generator, self.critic, self.model = generator, critic, model
        self.output, self.loss, self.n_critic = output, loss, n_critic
        self.clip, self.penalty_weight = clip, penalty_weight
        self._turn = _CRITIC

        def clipped(turn):
            if turn == _CRITIC and clip is not None:
                clip_weights(critic, clip)

        def players(_):
            return PlayerOptimizers(
                {_GENERATOR: make_optimizer(optimizers[0], generator.parameters(), "generator"),
                 _CRITIC: make_optimizer(optimizers[1], critic.parameters(), "critic")},
                lambda: self._turn, clipped)
        settings = {"loss": loss, "n_critic": n_critic, "clip": clip,
                    "penalty_weight": penalty_weight, "output": output}
        self.trainer = Trainer({"generator": generator, "critic": critic}, players,
                               checkpoint_path=checkpoint_path,
                               checkpoint_every=checkpoint_every, progress=progress,
                               resume=resume,
                               fingerprint={"adversarial": settings, **(fingerprint or {})})

    # -- one update ------------------------------------------------------------
    def sample(self, batch):
        """The generator's rows for `batch` (the value of its output node)."""
        bn = self.model(batch).observe()
        if self.output not in bn.nodes:
            raise ValueError(f"the generator has no output node '{self.output}' (its nodes: "
                             f"{', '.join(bn.nodes)}); add `bn.output('{self.output}', ...)` "
                             f"or pass output=<the node holding the generated rows>")
        return bn.outputs(self.output)

    def _scores(self, x, conditions, what):
        try:
            scores = self.critic(x, *conditions)
        except (RuntimeError, ValueError) as error:
            raise ValueError(f"the critic failed on {what} of shape {tuple(x.shape)} "
                             f"({type(error).__name__}: {error}); does it take inputs of "
                             f"that shape?") from error
        if not isinstance(scores, torch.Tensor) or scores.numel() != len(x) \
                or scores.dim() > 2 or (scores.dim() == 2 and scores.shape[1] != 1):
            got = tuple(scores.shape) if isinstance(scores, torch.Tensor) else type(scores)
            raise ValueError(f"the critic must return one score per row ([{len(x)}] or "
                             f"[{len(x)}, 1]) for {what} of shape {tuple(x.shape)}, got {got}")
        scores = scores.reshape(-1)
        if not bool(torch.isfinite(scores).all()):
            raise FloatingPointError(f"the critic's scores of {what} hold NaN/inf at "
                                     f"{self.trainer._where()}; no update was applied")
        return scores

    def _step(self, turn_batch):
        turn, batch = turn_batch
        self._turn = turn
        x, conditions = (batch[0], tuple(batch[1:])) if isinstance(batch, (tuple, list)) \
            else (batch, ())
        with torch.set_grad_enabled(turn == _GENERATOR and torch.is_grad_enabled()):
            fake = self.sample(batch)
        if not isinstance(fake, torch.Tensor) or fake.shape != x.shape:
            got = tuple(fake.shape) if isinstance(fake, torch.Tensor) else type(fake).__name__
            raise ValueError(f"the generator's output node '{self.output}' has shape {got}, "
                             f"the real batch's x {tuple(x.shape)}: they must match")
        if not bool(torch.isfinite(fake).all()):
            raise FloatingPointError(f"the generator's output node '{self.output}' holds NaN/inf "
                                     f"at {self.trainer._where()}; no update was applied")
        fake_scores = self._scores(fake, conditions, f"the generator's node '{self.output}'")
        real_scores = self._scores(x, conditions, "the real batch")
        d_loss = critic_loss(real_scores, fake_scores, self.loss)
        if turn == _GENERATOR:
            cost = generator_loss(fake_scores, self.loss)
        else:
            cost = d_loss
            if self.penalty_weight is not None:
                cost = cost + self.penalty_weight * gradient_penalty(self.critic, x, fake,
                                                                     *conditions)
        return cost, d_loss.detach()

    # -- the loop --------------------------------------------------------------
    def fit(self, batches, n_epochs):
        """Train for `n_epochs` over `batches` (an iterable or a callable epoch -> iterable of
        real batches); returns the history: each epoch's mean critic loss (without the
        penalty). Resumes from `checkpoint_path` as `Trainer.fit` does."""
        turns = (_SizedTurns if hasattr(batches, "__len__") else _Turns)(batches, self.n_critic)
        return self.trainer.fit(self._step, turns, n_epochs)
