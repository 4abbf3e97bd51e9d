"""The math `torch.distributions` lacks, as `torch.distributions.Distribution`s.

Only what torch has no class for lives here: the folded normal, the logistic
(a transformed uniform), the matrix-variate normal, the unnormalized
multinomial (ZhuSuan's bag of categoricals), the (Exp)Concrete with one
temperature per batch element (torch's treats a non-scalar temperature as if
it ran over the category axis), and a Poisson whose draws do not overflow.
"""
import math

import torch
import torch.distributions as td
from torch.distributions import constraints
from torch.distributions.relaxed_categorical import ExpRelaxedCategorical
from torch.distributions.utils import clamp_probs


class FoldedNormal(td.Distribution):
    """|X| for X ~ N(loc, scale)."""

    arg_constraints = {"loc": constraints.real, "scale": constraints.positive}
    support = constraints.nonnegative
    has_rsample = True

    def __init__(self, loc, scale, validate_args=False):
        self._normal = td.Normal(loc, scale, validate_args=False)
        self.loc, self.scale = self._normal.loc, self._normal.scale
        super().__init__(self._normal.batch_shape, validate_args=validate_args)

    def rsample(self, sample_shape=torch.Size()):
        return self._normal.rsample(sample_shape).abs()

    def log_prob(self, value):
        return torch.logaddexp(self._normal.log_prob(value), self._normal.log_prob(-value))


def Logistic(loc, scale):
    """Logistic(loc, scale) as a sigmoid-inverse-transformed uniform."""
    loc, scale = torch.broadcast_tensors(torch.as_tensor(loc), torch.as_tensor(scale))
    tiny = torch.finfo(loc.dtype).tiny
    base = td.Uniform(torch.full_like(loc, tiny), torch.ones_like(loc), validate_args=False)
    transforms = [td.SigmoidTransform().inv, td.AffineTransform(loc, scale)]
    return td.TransformedDistribution(base, transforms, validate_args=False)


class MatrixNormal(td.Distribution):
    """Matrix-variate normal MN(M, U, V) with Cholesky factors of U (n x n) and V (p x p).

    vec(X) ~ N(vec(M), V kron U); a draw is X = M + A Z B^T with U = A A^T,
    V = B B^T and Z standard normal of shape (n, p).
    """

    arg_constraints = {"loc": constraints.real_vector,
                       "u_tril": constraints.lower_cholesky,
                       "v_tril": constraints.lower_cholesky}
    support = constraints.real
    has_rsample = True

    def __init__(self, loc, u_tril, v_tril, validate_args=False):
        n, p = loc.shape[-2:]
        if u_tril.shape[-2:] != (n, n) or v_tril.shape[-2:] != (p, p):
            raise ValueError(f"u_tril must be ({n}, {n}) and v_tril ({p}, {p}) for a mean "
                             f"of value shape ({n}, {p}); got {tuple(u_tril.shape[-2:])} "
                             f"and {tuple(v_tril.shape[-2:])}")
        batch = torch.broadcast_shapes(loc.shape[:-2], u_tril.shape[:-2], v_tril.shape[:-2])
        self.loc = loc.expand(batch + (n, p))
        self.u_tril = u_tril.expand(batch + (n, n))
        self.v_tril = v_tril.expand(batch + (p, p))
        super().__init__(batch, torch.Size([n, p]), validate_args=validate_args)

    def rsample(self, sample_shape=torch.Size()):
        eps = torch.randn(self._extended_shape(sample_shape), dtype=self.loc.dtype,
                          device=self.loc.device)
        return self.loc + self.u_tril @ eps @ self.v_tril.transpose(-1, -2)

    def log_prob(self, value):
        n, p = self.event_shape
        diff = value - self.loc
        # A^{-1} (X - M) B^{-T}: two triangular solves.
        left = torch.linalg.solve_triangular(self.u_tril, diff, upper=False)
        whitened = torch.linalg.solve_triangular(self.v_tril, left.transpose(-1, -2),
                                                 upper=False)
        maha = whitened.pow(2).sum((-1, -2))
        log_det_u = self.u_tril.diagonal(dim1=-2, dim2=-1).log().sum(-1)
        log_det_v = self.v_tril.diagonal(dim1=-2, dim2=-1).log().sum(-1)
        return (-0.5 * (n * p * math.log(2 * math.pi) + maha)
                - p * log_det_u - n * log_det_v)


class Poisson(td.Poisson):
    """torch's Poisson, sampling rates above 2**62 from the normal approximation.

    torch's sampler counts in int64 and wraps around to -9.2e18 near 2**63;
    there N(rate, rate), rounded, is the Poisson law to a relative error below
    1e-9 (its skewness is rate**-0.5). An infinite rate draws inf.
    """

    LARGE_RATE = 2.0 ** 62

    def sample(self, sample_shape=torch.Size()):
        counts = super().sample(sample_shape)
        large = self.rate > self.LARGE_RATE
        if not bool(large.any()):
            return counts
        with torch.no_grad():
            rate = self.rate.expand(counts.shape)
            normal = (rate + rate.sqrt() * torch.randn_like(rate)).round()
            normal = torch.where(torch.isinf(rate), rate, normal)
            return torch.where(large.expand(counts.shape), normal, counts)


class UnnormalizedMultinomial(td.Distribution):
    """A bag of categoricals: log p(x) = sum_i x_i log p_i, no multinomial coefficient.

    The number of draws is not part of the distribution, so it cannot be sampled.
    """

    arg_constraints = {"logits": constraints.real_vector}
    support = constraints.independent(constraints.nonnegative_integer, 1)
    has_rsample = False

    def __init__(self, logits, normalize_logits=True, validate_args=False):
        self.logits = logits - logits.logsumexp(-1, keepdim=True) if normalize_logits else logits
        super().__init__(logits.shape[:-1], logits.shape[-1:], validate_args=validate_args)

    def sample(self, sample_shape=torch.Size()):
        raise NotImplementedError("UnnormalizedMultinomial cannot be sampled: the number of "
                                  "draws is unknown (use Multinomial with n_experiments)")

    def log_prob(self, value):
        return torch.where(value == 0, 0., value * self.logits).sum(-1)  # 0 * -inf = 0


class ExpConcrete(ExpRelaxedCategorical):
    """Log of a Concrete draw (Maddison et al., 2017), `temperature` of batch shape.

    Density: (k-1)! t^(k-1) prod_i(a_i e^(-t y_i)) / (sum_i a_i e^(-t y_i))^k.
    """

    def __init__(self, temperature, logits, validate_args=False):
        batch = torch.broadcast_shapes(temperature.shape, logits.shape[:-1])
        super().__init__(temperature.expand(batch),
                         logits=logits.expand(batch + logits.shape[-1:]),
                         validate_args=validate_args)

    def rsample(self, sample_shape=torch.Size()):
        uniforms = clamp_probs(torch.rand(self._extended_shape(sample_shape),
                                          dtype=self.logits.dtype, device=self.logits.device))
        gumbels = -(-uniforms.log()).log()
        scores = (self.logits + gumbels) / self.temperature.unsqueeze(-1)
        return scores - scores.logsumexp(-1, keepdim=True)

    def log_prob(self, value):
        k = self.event_shape[-1]
        scores = self.logits - value * self.temperature.unsqueeze(-1)
        log_normalizer = math.lgamma(k) + (k - 1) * self.temperature.log()
        return (scores - scores.logsumexp(-1, keepdim=True)).sum(-1) + log_normalizer


class Concrete(td.TransformedDistribution):
    """Concrete / Gumbel-softmax on the simplex: exp of an `ExpConcrete` draw."""

    support = constraints.simplex
    has_rsample = True

    def __init__(self, temperature, logits, validate_args=False):
        super().__init__(ExpConcrete(temperature, logits), td.ExpTransform(),
                         validate_args=validate_args)
