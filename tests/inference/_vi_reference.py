"""Exact reference values for the variational tests: two small models and their math.

- `NormalNormal`: z ~ N(mu0, s0), x | z ~ N(z, s), guide z ~ N(m, exp(logs)).
  Closed-form ELBO and KL(p || q) gradients; the importance weighted bound
  L_k = E[log (1/k) sum_j w_j] by a 2-D quadrature (see `iw_bound`).
- `TwoBits`: z in {0, 1}^2, z_i ~ Bernoulli(pi_i), x | z ~ N(a . z + c, s),
  guide z_i ~ Bernoulli(logits theta_i). Every expectation by enumeration.

All reference math is float64 torch, differentiated by autograd.
"""
import itertools
import math

import torch

import ppl

D = torch.float64


def per_replicate_stats(grads):
    """Mean and standard error over the replicate axis 0 of per-replicate estimates."""
    grads = grads.detach().to(D)
    return grads.mean(0), grads.std(0) / math.sqrt(grads.shape[0])


class NormalNormal:
    mu0, s0, s, x = 0.3, 1.2, 0.8, 1.5

    def __init__(self):
        precision = 1. / self.s0 ** 2 + 1. / self.s ** 2
        self.post_var = 1. / precision
        self.post_mean = self.post_var * (self.mu0 / self.s0 ** 2 + self.x / self.s ** 2)
        marginal = torch.distributions.Normal(self.mu0, math.sqrt(self.s0 ** 2 + self.s ** 2))
        self.log_px = float(marginal.log_prob(torch.tensor(self.x, dtype=D)))

    # -- ppl model and guide, R replicates side by side ----------------------
    def model_fn(self, k, R):
        """A model function: z [k, R] ~ N(mu0, s0), x ~ N(z, s) (x observed)."""
        def build():
            bn = ppl.BayesianNet()
            z = bn.normal("z", torch.full((R,), self.mu0), std=self.s0, n_samples=k)
            bn.normal("x", z, std=self.s)
            return bn
        return build

    def template(self):
        """The model as a `@ppl.meta_bayesian_net` template called (k, R)."""
        @ppl.meta_bayesian_net(scope="normal_normal")
        def build(k, R):
            return self.model_fn(k, R)()
        return build

    def observed(self):
        return {"x": torch.tensor(self.x)}

    @staticmethod
    def params(R, m, logs):
        """Per-replicate copies of the guide parameters: leaves [R] each."""
        return (torch.full((R,), float(m), requires_grad=True),
                torch.full((R,), float(logs), requires_grad=True))

    @staticmethod
    def guide(m, logs, k, **kwargs):
        q = ppl.BayesianNet()
        q.normal("z", m, logstd=logs, n_samples=k, **kwargs)
        return q

    # -- exact values -----------------------------------------------------------
    def elbo(self, m, logs):
        """Closed-form ELBO(m, logs)."""
        var = torch.exp(2 * logs)
        e_log_prior = -0.5 * math.log(2 * math.pi * self.s0 ** 2) \
            - ((m - self.mu0) ** 2 + var) / (2 * self.s0 ** 2)
        e_log_lik = -0.5 * math.log(2 * math.pi * self.s ** 2) \
            - ((self.x - m) ** 2 + var) / (2 * self.s ** 2)
        entropy = 0.5 * math.log(2 * math.pi * math.e) + logs
        return e_log_prior + e_log_lik + entropy

    def elbo_grad(self, m, logs):
        return _grad(self.elbo, m, logs)

    def _ratio(self, z, m, logs):
        """r(z) = p(z | x) / q(z): the weight w(z) / p(x)."""
        log_post = torch.distributions.Normal(self.post_mean, math.sqrt(self.post_var)).log_prob(z)
        return torch.exp(log_post - torch.distributions.Normal(m, torch.exp(logs)).log_prob(z))

    def iw_bound(self, m, logs, k):
        """L_k = log p(x) - log k + E[log sum_j r_j], r_j iid under q, by quadrature.

        Uses log S = int_0^inf (e^-t - e^-tS) / t dt, so E[log S] =
        int (e^-t - M(t)^k) dt/t with M(t) = E_q[exp(-t r(z))], a 1-D integral
        over z (trapezoid in u, z = m + exp(logs) u) inside a 1-D integral over
        s = log t (trapezoid). Exact for k = 1 to ~1e-9 (checked in the tests).
        """
        u = torch.linspace(-12., 12., 961, dtype=D)
        du = u[1] - u[0]
        weights_u = torch.exp(-0.5 * u ** 2) / math.sqrt(2 * math.pi) * du
        r = self._ratio(m + torch.exp(logs) * u, m, logs)                 # [U]
        s = torch.linspace(-30., 45., 3001, dtype=D)
        ds = s[1] - s[0]
        t = torch.exp(s)[:, None]                                          # [S, 1]
        laplace = (torch.exp(-t * r) * weights_u).sum(-1)                  # M(t): [S]
        integrand = torch.exp(-torch.exp(s)) - laplace ** k
        e_log_sum = (integrand.sum() - 0.5 * (integrand[0] + integrand[-1])) * ds
        return self.log_px - math.log(k) + e_log_sum

    def iw_grad(self, m, logs, k):
        return _grad(lambda a, b: self.iw_bound(a, b, k), m, logs)

    def klpq_grad(self, m, logs):
        """Exact gradient of KL(p(z|x) || q) in (m, logs): -E_p[grad log q(z)]."""
        var = math.exp(2 * logs)
        second = self.post_var + (self.post_mean - m) ** 2
        return torch.tensor([-(self.post_mean - m) / var, 1. - second / var], dtype=D)

    def klpq_first_order_bias(self, m, logs, k):
        """The O(1/k) bias of the self-normalized estimate -sum_j w~_j grad log q(z_j).

        E[sum_j w~_j f_j] = mu - E_p[r (f - mu)] / k + O(1/k^2), mu = E_p[f],
        r = p(z|x) / q(z) (delta method for a ratio of means); so the
        estimator's mean is klpq_grad + E_p[r (f - mu)] / k + O(1/k^2).
        """
        sd = math.sqrt(self.post_var)
        u = torch.linspace(-12., 12., 2401, dtype=D)
        z = self.post_mean + sd * u
        weights = torch.exp(-0.5 * u ** 2) / math.sqrt(2 * math.pi) * (u[1] - u[0])
        var = math.exp(2 * logs)
        f = torch.stack([(z - m) / var, (z - m) ** 2 / var - 1.])          # [2, U]
        mu = (f * weights).sum(-1, keepdim=True)
        r = self._ratio(z, torch.tensor(m, dtype=D), torch.tensor(logs, dtype=D))
        return (r * (f - mu) * weights).sum(-1) / k


def _grad(fn, m, logs):
    m = torch.tensor(float(m), dtype=D, requires_grad=True)
    logs = torch.tensor(float(logs), dtype=D, requires_grad=True)
    value = fn(m, logs)
    return torch.stack(torch.autograd.grad(value, [m, logs])).detach()


class TwoBits:
    pi = (0.3, 0.6)
    a = (1.5, -1.0)
    c, s, x = 0.2, 0.7, 0.9

    def __init__(self):
        self.states = torch.tensor(list(itertools.product([0., 1.], repeat=2)), dtype=D)
        prior = torch.distributions.Bernoulli(torch.tensor(self.pi, dtype=D))
        mean = self.states @ torch.tensor(self.a, dtype=D) + self.c
        self.log_joint = prior.log_prob(self.states).sum(-1) + \
            torch.distributions.Normal(mean, self.s).log_prob(torch.tensor(self.x, dtype=D))
        self.log_px = torch.logsumexp(self.log_joint, 0)
        self.posterior = torch.exp(self.log_joint - self.log_px)          # [4]

    def template(self):
        @ppl.meta_bayesian_net(scope="two_bits")
        def build(k, R):
            bn = ppl.BayesianNet()
            z = bn.bernoulli("z", probs=torch.tensor(self.pi).expand(R, 2), group_ndims=1,
                             n_samples=k)
            bn.normal("x", z @ torch.tensor(self.a) + self.c, std=self.s)
            return bn
        return build

    def observed(self):
        return {"x": torch.tensor(self.x)}

    @staticmethod
    def params(R, theta):
        return torch.tensor(theta, dtype=torch.get_default_dtype()).repeat(R, 1).requires_grad_()

    @staticmethod
    def guide(theta, k):
        q = ppl.BayesianNet()
        q.bernoulli("z", theta, group_ndims=1, n_samples=k)
        return q

    def _log_q(self, theta):
        return torch.distributions.Bernoulli(logits=theta).log_prob(self.states).sum(-1)

    def elbo_grad(self, theta):
        theta = torch.tensor(theta, dtype=D, requires_grad=True)
        log_q = self._log_q(theta)
        value = (log_q.exp() * (self.log_joint - log_q)).sum()
        return torch.autograd.grad(value, theta)[0]

    def _tuples(self, k):
        """All k-tuples of states: indices [4^k, k]."""
        return torch.tensor(list(itertools.product(range(4), repeat=k)))

    def iw_grad(self, theta, k):
        theta = torch.tensor(theta, dtype=D, requires_grad=True)
        log_q = self._log_q(theta)
        idx = self._tuples(k)
        log_w = (self.log_joint - log_q)[idx]                                # [T, k]
        bound = torch.logsumexp(log_w, -1) - math.log(k)
        value = (log_q[idx].sum(-1).exp() * bound).sum()
        return torch.autograd.grad(value, theta)[0]

    def klpq_grad(self, theta):
        """Exact gradient of KL(p(z|x) || q): sigmoid(theta) - E_p[z]."""
        return torch.sigmoid(torch.tensor(theta, dtype=D)) - self.posterior @ self.states

    def klpq_estimator_mean(self, theta, k):
        """The exact mean of -sum_j w~_j grad log q(z_j) over k iid draws from q."""
        theta_t = torch.tensor(theta, dtype=D)
        log_q = self._log_q(theta_t)
        score = self.states - torch.sigmoid(theta_t)                         # [4, 2]
        idx = self._tuples(k)
        w_tilde = torch.softmax((self.log_joint - log_q)[idx], -1)           # [T, k]
        estimate = -(w_tilde[..., None] * score[idx]).sum(1)                 # [T, 2]
        return (log_q[idx].sum(-1).exp()[:, None] * estimate).sum(0)
