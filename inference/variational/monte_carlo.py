"""The importance weighted objective (IWAE bound, Burda et al. 2015), with SGVB and VIMCO.

    lower_bound = inference.iw_objective(model, {"x": x}, variational=q, axis=0)
    cost = lower_bound.sgvb().mean()      # reparameterized guide (IWAE)
    cost = lower_bound.vimco().mean()     # any guide, is_reparameterized=False

The value is log (1/k) sum_j w_j over the k samples on `axis`, w_j =
p(x, z_j) / q(z_j): a lower bound of log p(x) that tightens as k grows, and
equals the ELBO's estimate when k = 1.
"""
import torch

from inference.utils import log_mean_exp
from inference.variational.base import VariationalObjective

__all__ = ["importance_weighted_objective", "iw_objective", "ImportanceWeightedObjective"]


class ImportanceWeightedObjective(VariationalObjective):
    """The importance weighted bound (see `importance_weighted_objective`)."""

    def _objective(self):
        log_w = self._log_weight()
        if self._size_along_axis(log_w) is None:
            return log_w
        return log_mean_exp(log_w, self._axis)

    def sgvb(self):
        """The SGVB surrogate cost of the bound (IWAE): minus the bound, per example.

        Guides with `use_path_derivative=True` are refused when k > 1: dropping
        the score term ("sticking the landing") is unbiased for the ELBO but
        biased for the importance weighted bound (Tucker et al. 2018).
        """
        self._require_reparameterized("sgvb()")
        k = self._size_along_axis(self._log_weight())
        for node in self._guide.values():
            if k is not None and k > 1 and node.dist is not None \
                    and node.dist.use_path_derivative:
                raise ValueError(f"sgvb(): guide node '{node.name}' has use_path_derivative="
                                 f"True, whose path-only gradient is biased for the importance "
                                 f"weighted bound with k > 1; build the guide without it")
        return -self.tensor

    def vimco(self):
        """The VIMCO surrogate cost (Mnih & Rezende 2016), per example.

        A score-function estimator whose learning signal for sample j is
        L - L_{-j}: the bound minus the bound with log w_j replaced by the mean
        of the other samples' log w (a leave-one-out control variate). Needs
        an `axis` with at least 2 samples and a guide that is not
        reparameterized.
        """
        self._require_score_function("vimco()")
        log_w = self._log_weight()
        k = self._size_along_axis(log_w)
        if k is None or k < 2:
            raise ValueError(f"vimco() is a multi-sample estimator: it needs an `axis` with at "
                             f"least 2 samples, got "
                             f"{'axis=None' if k is None else f'{k} sample on axis {self._axis}'}")
        x = log_w.detach().movedim(self._axis, -1)                 # [..., k]
        others_mean = (x.sum(-1, keepdim=True) - x) / (k - 1)      # [..., k]
        eye = torch.eye(k, dtype=torch.bool, device=x.device)
        # Row j: the log weights with entry j replaced by the mean of the others.
        replaced = torch.where(eye, others_mean.unsqueeze(-1), x.unsqueeze(-2))  # [..., k, k]
        control = log_mean_exp(replaced, -1)                       # [..., k]
        signal = log_mean_exp(x, -1, keepdims=True) - control      # L - L_{-j}
        log_q = self._log_q_term().expand_as(log_w).movedim(self._axis, -1)
        return -(signal * log_q).sum(-1) - self.tensor


def importance_weighted_objective(meta_bn, observed, latent=None, axis=None, variational=None):
    """The importance weighted bound of `meta_bn` with `observed`, the guide as proposal.

    Arguments as in `inference.elbo`; `axis` is the axis of the k importance
    samples (None: k = 1, the bound is log w itself). Returns an
    `ImportanceWeightedObjective` (tensor-like; `.sgvb()`, `.vimco()`).
    """
    return ImportanceWeightedObjective(meta_bn, observed, latent, axis, variational)


iw_objective = importance_weighted_objective
