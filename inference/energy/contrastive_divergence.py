"""Maximum-likelihood learning of energy models: contrastive divergence (CD-k) and PCD.

    cd = inference.energy.ContrastiveDivergence(model, k=1)               # CD-1
    pcd = inference.energy.ContrastiveDivergence(model, persistent=True, n_chains=100)
    trainer = inference.Trainer({"rbm": rbm, "cd": pcd}, lambda p: torch.optim.SGD(p, 0.01))
    trainer.fit(pcd.step, batches, n_epochs=10)

The gradient of the mean log-likelihood of data v is

    E_data[ d log p*(v, h) ] - E_model[ d log p*(v, h) ],

the first expectation under p(h | v) (the data term), the second under the
model (the model term). `step(batch)` returns a cost whose gradient is minus
an estimate of it:

- data term: the hidden layers at their mean-field means given v (exact for
  one hidden layer, an RBM; the variational data term of a DBM,
  Salakhutdinov & Hinton 2009); log p* is linear in each layer, so averaging
  over independent Bernoulli units is evaluating it at the means
  (`EnergyModel.log_joint`);
- model term: k block-Gibbs sweeps (`inference.Gibbs` with the model's
  conditionals) from the data, hidden units drawn from their means (CD-k,
  Hinton 2002), or from persistent chains carried across steps (PCD,
  Tieleman 2008); the last layer of the sweep is replaced by its
  conditional means (Rao-Blackwellized).

The first step checks the model's conditionals against its energy
(`EnergyModel.check`): a wrong hand-written one stops training at once.

The objective reported is the reconstruction log-likelihood
log p(v | h), h drawn given v, per example: a cheap monitor of training
(not the likelihood, which needs the partition function: see
`inference.energy.ais_log_partition`).

The persistent chains are buffers of this module: pass it to the Trainer
among `modules`, and its checkpoints carry them (a resumed PCD run goes on
from the same chains).
"""
import torch
from torch import nn

from inference.gibbs import Gibbs
from ppl.energy import check_binary

__all__ = ["ContrastiveDivergence"]


class ContrastiveDivergence(nn.Module):
    """A step function for `inference.Trainer`: CD-k or persistent CD on an EnergyModel.

    model: a `ppl.EnergyModel`. visible: the layer the data fill (the others
    are hidden). k: Gibbs sweeps per step. persistent: carry the chains
    across steps (PCD); `n_chains` of them (default: the first batch's size),
    started from the first batch's rows. mean_field_iterations: fixed-point
    updates of the data term when there are several hidden layers.
    """

    def __init__(self, model, visible="v", k=1, persistent=False, n_chains=None,
                 mean_field_iterations=10):
        super().__init__()
        if visible not in model.layers:
            raise ValueError(f"ContrastiveDivergence: `visible` names '{visible}', which is not "
                             f"a layer of the model (layers: {', '.join(model.layers)})")
        if not isinstance(k, int) or isinstance(k, bool) or k < 1:
            raise ValueError(f"ContrastiveDivergence: `k` (Gibbs sweeps per step) must be a "
                             f"positive int, got {k!r}")
        if n_chains is not None and not persistent:
            raise ValueError("ContrastiveDivergence: `n_chains` is for persistent chains; "
                             "CD-k starts one chain at each example of the batch")
        self.model = model
        self.visible = visible
        self.hidden = [name for name in model.layers if name != visible]
        self.k = k
        self.persistent = persistent
        self.n_chains = n_chains
        self.mean_field_iterations = mean_field_iterations
        self.gibbs = Gibbs(conditionals=model.conditionals())
        self._checked = False
        if persistent and n_chains is not None:
            self._make_chains(n_chains, torch.get_default_dtype())

    def _make_chains(self, n_chains, dtype):
        for name, size in self.model.layers.items():
            self.register_buffer(f"chains_{name}", torch.zeros(n_chains, size, dtype=dtype))
        self.register_buffer("started", torch.zeros((), dtype=torch.bool))

    @property
    def chains(self):
        """The persistent chains' state (name -> [n_chains, units]), or None for CD-k."""
        if not self.persistent or not hasattr(self, "started"):
            return None
        return {name: getattr(self, f"chains_{name}") for name in self.model.layers}

    def step(self, batch):
        """(cost, reconstruction log-likelihood [batch]) for `batch` [n, units] of 0/1 data."""
        if isinstance(batch, (list, tuple)):
            batch = batch[0]
        v = check_binary(self.visible, batch)
        v = v if v.is_floating_point() else v.to(torch.get_default_dtype())
        model = self.model
        with torch.no_grad():
            data_means = model.mean_field({self.visible: v}, self.hidden,
                                          self.mean_field_iterations)
            _check_finite(data_means, "the data term's means")
            drawn = {name: torch.bernoulli(mean) for name, mean in data_means.items()}
            if not self._checked:  # a conditional that disagrees with the energy: say so now
                model.check({self.visible: v[:8], **{n: d[:8] for n, d in drawn.items()}})
                self._checked = True
            reconstruction = model.conditional(self.visible, {self.visible: v, **drawn}) \
                .log_prob(v)
            state = self._start(v, drawn)
            for _ in range(self.k):
                state, _ = self.gibbs.sample(model.meta_bn, {}, state)
            if self.persistent:
                for name, value in state.items():
                    getattr(self, f"chains_{name}").copy_(value)
            last = list(model.layers)[-1]
            negative = {**state, last: torch.sigmoid(model.logits(last, state))}
            _check_finite(negative, "the model term's chains")
        positive = model.log_joint({self.visible: v, **data_means})
        cost = model.log_joint(negative).mean() - positive.mean()
        return cost, reconstruction

    def _start(self, v, drawn):
        """The chains' state before this step's sweeps: the data (CD) or the persistent ones."""
        if not self.persistent:
            return {self.visible: v, **drawn}
        if not hasattr(self, "started"):
            self._make_chains(self.n_chains or len(v), v.dtype)
        if not bool(self.started):
            n = getattr(self, f"chains_{self.visible}").shape[0]
            rows = torch.randint(len(v), (n,), device=v.device)
            start = {self.visible: v[rows], **{name: value[rows] for name, value in drawn.items()}}
            for name, value in start.items():
                getattr(self, f"chains_{name}").copy_(value)
            self.started.fill_(True)
        return {name: value.to(v.dtype) for name, value in self.chains.items()}


def _check_finite(values, what):
    for name, value in values.items():
        if not bool(torch.isfinite(value).all()):
            raise FloatingPointError(f"ContrastiveDivergence: layer '{name}' has non-finite "
                                     f"values in {what} (the weights overflowed: lower the "
                                     f"learning rate)")
