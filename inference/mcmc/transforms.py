"""Constrained latents <-> one flat unconstrained vector per chain.

HMC and NUTS move in R^D. A latent with a constrained support (positive,
interval, simplex, Cholesky factor) is reached through the bijection
`torch.distributions.biject_to(support)`; the sampler targets

    log p(T(u)) + log |det dT/du|

in the unconstrained `u`, and every draw is mapped back with `T`. All latents
of all chains live in one tensor `x` of shape [n_chains, D] so that the
integrator does a handful of tensor operations per step, whatever the model.
"""
import math

import torch
from torch.distributions import biject_to, constraints
from torch.distributions import transforms as T
from torch.distributions.utils import tril_matrix_to_vec, vec_to_tril_matrix

__all__ = ["LatentSpace", "transform_to", "LowerCholeskyTransform"]


class LowerCholeskyTransform(T.Transform):
    """Vector of n(n+1)/2 reals -> lower-triangular n x n matrix with positive diagonal.

    The strictly lower entries are copied and the diagonal is exponentiated, so
    the map is a bijection (torch's own `LowerCholeskyTransform` takes an n x n
    input and ignores its upper triangle, which would leave flat directions).
    """

    domain = constraints.real_vector
    codomain = constraints.lower_cholesky
    bijective = True

    @staticmethod
    def _size(m):
        n = int(round((math.sqrt(8 * m + 1) - 1) / 2))
        if n * (n + 1) // 2 != m:
            raise ValueError(f"LowerCholeskyTransform: a vector of length {m} is not "
                             f"n(n+1)/2 for any n")
        return n

    def _call(self, x):
        raw = vec_to_tril_matrix(x)
        return raw.tril(-1) + torch.diag_embed(raw.diagonal(dim1=-2, dim2=-1).exp())

    def _inverse(self, y):
        return tril_matrix_to_vec(y.tril(-1) + torch.diag_embed(
            y.diagonal(dim1=-2, dim2=-1).log()))

    def log_abs_det_jacobian(self, x, y):
        return y.diagonal(dim1=-2, dim2=-1).log().sum(-1)

    def forward_shape(self, shape):
        n = self._size(shape[-1])
        return torch.Size(shape[:-1]) + (n, n)

    def inverse_shape(self, shape):
        if len(shape) < 2 or shape[-1] != shape[-2]:
            raise ValueError(f"LowerCholeskyTransform: expected square matrices, got shape "
                             f"{tuple(shape)}")
        n = shape[-1]
        return torch.Size(shape[:-2]) + (n * (n + 1) // 2,)


def _is_zero(bound):
    return not isinstance(bound, torch.Tensor) and bound == 0 or \
        isinstance(bound, torch.Tensor) and bool((bound == 0).all())


def _is_one(bound):
    return not isinstance(bound, torch.Tensor) and bound == 1 or \
        isinstance(bound, torch.Tensor) and bool((bound == 1).all())


def transform_to(support, name="latent"):
    """The bijection from unconstrained reals onto `support`, or None for the reals.

    Uses `torch.distributions.biject_to`, with the cheaper exp / sigmoid for
    [0, inf) and [0, 1] and a full-rank map for lower Cholesky factors.
    """
    base, reinterpreted = support, 0
    while isinstance(base, constraints.independent):
        reinterpreted += base.reinterpreted_batch_ndims
        base = base.base_constraint
    if base.is_discrete:
        raise ValueError(f"latent '{name}' has a discrete support ({base}): HMC and NUTS need "
                         f"continuous latents (marginalize it out, or use Gibbs)")
    if isinstance(base, constraints._Real):
        return None
    if isinstance(base, (constraints._GreaterThan, constraints._GreaterThanEq)) \
            and _is_zero(base.lower_bound):
        transform = T.ExpTransform()
    elif isinstance(base, (constraints._Interval, constraints._HalfOpenInterval)) \
            and _is_zero(base.lower_bound) and _is_one(base.upper_bound):
        transform = T.SigmoidTransform()
    elif isinstance(base, constraints._LowerCholesky):
        transform = LowerCholeskyTransform()
    else:
        try:
            transform = biject_to(base)
        except NotImplementedError:
            raise ValueError(f"latent '{name}': no bijection onto its support {base} is "
                             f"known; give the model an unconstrained parameterization") from None
    if reinterpreted:
        transform = T.IndependentTransform(transform, reinterpreted)
    return transform


class LatentSpace:
    """The layout of the latents in the flat unconstrained vector.

    names:  latent names, in order.
    shapes: constrained shape of one chain's value of each latent.
    transforms: bijection (unconstrained -> constrained) per latent, None = identity.
    chain_shape: the leading chain axes of every latent (`()` for a single chain).
    """

    def __init__(self, names, shapes, transforms, chain_shape):
        self.names = list(names)
        self.shapes = {k: torch.Size(s) for k, s in zip(self.names, shapes)}
        self.transforms = dict(zip(self.names, transforms))
        self.chain_shape = torch.Size(chain_shape)
        self.n_chains = math.prod(self.chain_shape)
        self.unconstrained_shapes = {
            k: self.shapes[k] if t is None else t.inverse_shape(self.shapes[k])
            for k, t in self.transforms.items()}
        self.slices = {}
        offset = 0
        for k in self.names:
            size = math.prod(self.unconstrained_shapes[k])
            self.slices[k] = slice(offset, offset + size)
            offset += size
        self.dim = offset
        # Skip slicing / reshaping where a latent is the whole vector / already flat.
        self._whole = {k: s == slice(0, self.dim) for k, s in self.slices.items()}
        self._reshape = {k: len(self.unconstrained_shapes[k]) != 1 for k in self.names}
        self.has_transforms = any(t is not None for t in self.transforms.values())

    def constrain(self, x, with_log_det=False):
        """Flat `x` [..., D] -> dict name -> constrained value [..., *shape].

        With `with_log_det`, also returns log|det J| summed per leading index: [...].
        """
        lead = x.shape[:-1]
        values = {}
        log_det = x.new_zeros(lead) if with_log_det else None
        for k in self.names:
            u = x if self._whole[k] else x[..., self.slices[k]]
            if self._reshape[k]:
                u = u.reshape(lead + self.unconstrained_shapes[k])
            t = self.transforms[k]
            if t is None:
                values[k] = u
                continue
            y = t(u)
            values[k] = y
            if with_log_det:
                ladj = t.log_abs_det_jacobian(u, y)
                log_det = log_det + ladj.reshape(lead + (-1,)).sum(-1)
        return (values, log_det) if with_log_det else values

    def split(self, x):
        """Flat `x` [..., D] -> dict name -> its part in the unconstrained space
        [..., *unconstrained shape] (e.g. a momentum, which has no constrained value)."""
        lead = x.shape[:-1]
        return {k: x[..., self.slices[k]].reshape(lead + self.unconstrained_shapes[k])
                for k in self.names}

    def unconstrain(self, values):
        """dict name -> constrained value [..., *shape] -> flat `x` [..., D]."""
        parts = []
        lead = None
        for k in self.names:
            y = values[k]
            shape = self.shapes[k]
            here = y.shape[:y.dim() - len(shape)]
            if y.shape[len(here):] != shape or (lead is not None and here != lead):
                raise ValueError(f"latent '{k}': expected shape (...) + {tuple(shape)} with the "
                                 f"same leading axes as the other latents, got {tuple(y.shape)}")
            lead = here
            t = self.transforms[k]
            u = y if t is None else t.inv(y)
            parts.append(u.reshape(lead + (-1,)))
        return torch.cat(parts, -1)

    def to_chains(self, values):
        """Flatten the chain axes of constrained values: [*chain_shape, ...] -> [n_chains, ...]."""
        return {k: v.reshape((self.n_chains,) + self.shapes[k]) for k, v in values.items()}

    def from_chains(self, values):
        """Restore the chain axes: [n_chains, ...] -> [*chain_shape, ...]."""
        return {k: v.reshape(self.chain_shape + self.shapes[k]) for k, v in values.items()}

    def __repr__(self):
        parts = ", ".join(f"{k}: {tuple(self.shapes[k])}" for k in self.names)
        return f"LatentSpace({parts}; chains {tuple(self.chain_shape)}, D={self.dim})"
