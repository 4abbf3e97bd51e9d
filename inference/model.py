"""How inference sees a model: a function from latent values to log p(observed, latent).

Every algorithm accepts the model in ZhuSuan's forms: a `MetaBayesianNet`
(from a `@ppl.meta_bayesian_net` template call), an `nn.Module` or function
returning a `BayesianNet` (wrapped by `ppl.as_meta_bn`), or a plain callable
`log_joint(values) -> tensor` taking the dict of observed and latent values.
`LogJoint` is the one place that tells them apart (`LogJoint.is_plain`), and
`value_and_grad` the one log density with gradient that HMC, NUTS
(`inference.mcmc.Potential`), AIS and SG-MCMC evaluate.
"""
import math

import torch
from torch import nn

import ppl
from ppl.template import MetaBayesianNet

__all__ = ["LogJoint", "value_and_grad"]


def value_and_grad(log_density, inputs, mask_nonfinite=True):
    """(log_density(inputs) detached, the gradient of its sum with respect to `inputs`).

    inputs: a tensor, or a dict name -> tensor (the gradient is then a dict, None where
    the value does not depend on an input). Each entry of the value is one chain and
    depends on its own inputs only, so the gradient of the sum is every chain's own.
    mask_nonfinite (a tensor input [n, D] with a value [n]): chains whose value or
    gradient is not finite get log density -inf and a zero gradient, so that a kernel
    rejects moves there and they never poison the other chains.
    """
    if torch.is_inference_mode_enabled():
        raise RuntimeError(
            "value_and_grad: a gradient of the log density is needed (HMC, NUTS, AIS, SG-MCMC, "
            "VI), but torch.inference_mode() is on, where autograd records nothing (every "
            "gradient would be zero). Call it outside `with torch.inference_mode():` (it "
            "runs without recording what it does not need)")
    leaves = {k: v.detach().requires_grad_(True) for k, v in inputs.items()} \
        if isinstance(inputs, dict) else inputs.detach().requires_grad_(True)
    with torch.enable_grad():
        value = log_density(leaves)
        listed = list(leaves.values()) if isinstance(leaves, dict) else [leaves]
        if isinstance(value, torch.Tensor) and value.requires_grad:
            grads = torch.autograd.grad(value, listed, torch.ones_like(value),
                                        allow_unused=True)
        else:
            grads = [None] * len(listed)
    value = value.detach() if isinstance(value, torch.Tensor) else value
    if isinstance(leaves, dict):
        return value, dict(zip(leaves, grads))
    grad = torch.zeros_like(leaves) if grads[0] is None else grads[0]
    if mask_nonfinite:
        finite = torch.isfinite(value) & torch.isfinite(grad).all(-1)
        value = torch.where(finite, value, -math.inf)
        grad = torch.where(finite[:, None], grad, 0.)
    return value, grad


class LogJoint:
    """`log_joint(latent) -> tensor`: the model's log joint with `observed` fixed.

    `bn(latent)` gives the whole `BayesianNet` (None for a plain callable) for
    algorithms that need per-node terms; `is_plain` says which form the model has.
    """

    def __init__(self, meta_bn, observed):
        self.observed = dict(observed or {})
        if isinstance(meta_bn, (MetaBayesianNet, nn.Module)):
            self.meta_bn = ppl.as_meta_bn(meta_bn)
            self.plain = None
        elif callable(meta_bn):
            self.meta_bn = None
            self.plain = meta_bn
        else:
            raise TypeError(f"`meta_bn` must be a MetaBayesianNet, an nn.Module building a "
                            f"BayesianNet, or a callable log_joint(values) -> tensor; got "
                            f"{type(meta_bn).__name__}")

    @property
    def is_plain(self):
        """Whether the model is a plain log_joint callable (no nodes to inspect)."""
        return self.meta_bn is None

    def _check_overlap(self, latent):
        both = set(latent) & set(self.observed)
        if both:
            raise ValueError(f"nodes {sorted(both)} are given both as observed and as latent")

    def bn(self, latent):
        """The model's `BayesianNet` with `observed` and `latent` observed (None if plain)."""
        self._check_overlap(latent)
        if self.is_plain:
            return None
        return self.meta_bn.observe(**self.observed, **latent)

    def __call__(self, latent):
        self._check_overlap(latent)
        if self.is_plain:
            out = self.plain({**self.observed, **latent})
            if not isinstance(out, torch.Tensor):
                out = torch.as_tensor(out)
            return out
        return self.bn(latent).log_joint()
