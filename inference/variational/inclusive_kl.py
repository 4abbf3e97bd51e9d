"""The inclusive KL objective KL(p || q): adapting q towards the posterior by importance sampling.

    klpq_obj = inference.klpq(model, {"x": x}, variational=q, axis=0)
    cost = klpq_obj.importance().mean()      # (q's) reweighted wake-sleep update

KL(p(z|x) || q(z)) itself cannot be evaluated (it needs log p(x)), so the
object has no value; only the gradient estimator is offered. Its gradient
in q's parameters is -E_p[grad log q(z)], estimated with self-normalized
importance weights w~_j = w_j / sum_i w_i of the guide's k samples: biased
by O(1/k), consistent as k grows.
"""
from inference.variational.base import VariationalObjective

__all__ = ["klpq", "InclusiveKLObjective"]


class InclusiveKLObjective(VariationalObjective):
    """The inclusive KL objective (see `klpq`)."""

    def _objective(self):
        raise NotImplementedError("the inclusive KL objective (klpq) cannot be evaluated, only "
                                  "optimized with .importance(); report an "
                                  "importance_weighted_objective's value instead")

    def importance(self):
        """The self-normalized importance sampling surrogate cost, per example.

        cost = -sum_j stop(w~_j) log q(z_j) over `axis`: the wake-phase update
        of q in reweighted wake-sleep (Bornschein & Bengio 2015). Needs an
        `axis` with at least 2 samples and a guide that is not reparameterized.
        """
        self._require_score_function("importance()")
        log_w = self._log_weight()
        k = self._size_along_axis(log_w)
        if k is None or k < 2:
            raise ValueError(f"klpq importance(): self-normalized weights need an `axis` with "
                             f"at least 2 samples, got "
                             f"{'axis=None' if k is None else f'{k} sample on axis {self._axis}'}")
        weights = log_w.detach().softmax(self._axis)
        return -(weights * self._log_q_term()).sum(self._axis)

    def rws(self):
        """Alias of `importance()` (ZhuSuan's name for the same estimator)."""
        return self.importance()


def klpq(meta_bn, observed, latent=None, axis=None, variational=None):
    """The inclusive KL objective KL(p(z|x) || q(z)); arguments as in `inference.elbo`.

    Returns an `InclusiveKLObjective`: no value, `.importance()` (alias `.rws()`)
    gives the surrogate cost for q's parameters (not the model's).
    """
    return InclusiveKLObjective(meta_bn, observed, latent, axis, variational)
