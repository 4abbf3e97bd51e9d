"""Euclidean metrics (mass matrices), one per chain.

A metric is given by its inverse mass matrix M^-1, which adaptation sets to an
estimate of the posterior covariance in the unconstrained space. Momenta are
drawn from N(0, M), the kinetic energy is p^T M^-1 p / 2 and the velocity is
dx/dt = M^-1 p.

- `DiagonalMetric(inverse_mass)`: inverse_mass [n_chains, D].
- `DenseMetric(inverse_mass)`: inverse_mass [n_chains, D, D].
"""
import torch

__all__ = ["DiagonalMetric", "DenseMetric", "identity_metric"]


class DiagonalMetric:
    """Diagonal mass matrix per chain; `inverse_mass` [n_chains, D] (variances)."""

    dense = False

    def __init__(self, inverse_mass):
        self.inverse_mass = inverse_mass
        self._mass_sqrt = inverse_mass.rsqrt()

    @property
    def momentum_factor(self):
        """M^1/2 [n_chains, D]: `momentum_from(z, momentum_factor)` turns z ~ N(0, I) into p."""
        return self._mass_sqrt

    @staticmethod
    def momentum_from(noise, momentum_factor):
        """p ~ N(0, M) from standard normal `noise` [n_chains, D] (pure: for compiled steps)."""
        return noise * momentum_factor

    def sample_momentum(self):
        """p ~ N(0, M): [n_chains, D]."""
        return self.momentum_from(torch.randn_like(self.inverse_mass), self._mass_sqrt)

    def velocity(self, momentum):
        """M^-1 p: [n_chains, D]."""
        return self.inverse_mass * momentum

    @staticmethod
    def velocity_from(inverse_mass, momentum):
        """M^-1 p with M^-1 passed in (for compiled steps, where it is an input)."""
        return inverse_mass * momentum

    def kinetic_energy(self, momentum, velocity=None):
        """p^T M^-1 p / 2 per chain: [n_chains]."""
        if velocity is None:
            velocity = self.velocity(momentum)
        return 0.5 * torch.linalg.vecdot(momentum, velocity)


class DenseMetric:
    """Dense mass matrix per chain; `inverse_mass` [n_chains, D, D] (covariances)."""

    dense = True

    def __init__(self, inverse_mass):
        self.inverse_mass = inverse_mass
        chol = torch.linalg.cholesky(inverse_mass)
        eye = torch.eye(chol.shape[-1], dtype=chol.dtype, device=chol.device)
        # L^-1, once per metric: each momentum is then a product, not a triangular solve
        # (contiguous: the solve returns it column-major, which a compiled step would copy
        # at every call)
        self._inverse_factor = torch.linalg.solve_triangular(chol, eye, upper=False).contiguous()

    @property
    def momentum_factor(self):
        """L^-1 where M^-1 = L L^T (L lower triangular) [n_chains, D, D] (see `momentum_from`)."""
        return self._inverse_factor

    @staticmethod
    def momentum_from(noise, momentum_factor):
        """p = L^-T z has covariance (L L^T)^-1 = M; noise z [n_chains, D]. As a row z^T L^-1
        times a matrix: cheaper inside a step than a triangular solve."""
        return (noise[:, None, :] @ momentum_factor)[:, 0]

    def sample_momentum(self):
        z = torch.randn(self.inverse_mass.shape[:-1], dtype=self.inverse_mass.dtype,
                        device=self.inverse_mass.device)
        return self.momentum_from(z, self._inverse_factor)

    def velocity(self, momentum):
        return self.velocity_from(self.inverse_mass, momentum)

    @staticmethod
    def velocity_from(inverse_mass, momentum):
        # p^T M^-1 = (M^-1 p)^T, M^-1 symmetric; a row times a matrix is faster than bmm
        return (momentum[:, None, :] @ inverse_mass)[:, 0]

    def kinetic_energy(self, momentum, velocity=None):
        if velocity is None:
            velocity = self.velocity(momentum)
        return 0.5 * torch.linalg.vecdot(momentum, velocity)


def identity_metric(n_chains, dim, dense=False, dtype=None, device=None):
    """The unit metric (M = I) for every chain."""
    if dense:
        eye = torch.eye(dim, dtype=dtype, device=device)
        return DenseMetric(eye.expand(n_chains, dim, dim).clone())
    return DiagonalMetric(torch.ones(n_chains, dim, dtype=dtype, device=device))
