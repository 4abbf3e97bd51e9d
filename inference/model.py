"""How inference sees a model: a function from latent values to log p(observed, latent).

Every algorithm accepts the model in ZhuSuan's forms: a `MetaBayesianNet`
(from a `@ppl.meta_bayesian_net` template call), an `nn.Module` or function
returning a `BayesianNet` (wrapped by `ppl.as_meta_bn`), or a plain callable
`log_joint(values) -> tensor` taking the dict of observed and latent values.
"""
import torch
from torch import nn

import ppl
from ppl.template import MetaBayesianNet

__all__ = ["LogJoint"]


class LogJoint:
    """`log_joint(latent) -> tensor`: the model's log joint with `observed` fixed.

    `bn(latent)` gives the whole `BayesianNet` (None for a plain callable) for
    algorithms that need per-node terms.
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

    def _check_overlap(self, latent):
        both = set(latent) & set(self.observed)
        if both:
            raise ValueError(f"nodes {sorted(both)} are given both as observed and as latent")

    def bn(self, latent):
        """The model's `BayesianNet` with `observed` and `latent` observed (None if plain)."""
        self._check_overlap(latent)
        if self.meta_bn is None:
            return None
        return self.meta_bn.observe(**self.observed, **latent)

    def __call__(self, latent):
        self._check_overlap(latent)
        if self.meta_bn is None:
            out = self.plain({**self.observed, **latent})
            if not isinstance(out, torch.Tensor):
                out = torch.as_tensor(out)
            return out
        return self.bn(latent).log_joint()
