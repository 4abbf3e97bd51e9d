"""A model written without the chain axes (the Pyro way) gets an error naming them (#20.14)."""
import functools
import re

import pytest
import torch

import inference
import ppl
from inference.mcmc import Potential

# Compilation is tested in test_compile: the kernels here run eagerly.
NUTS = functools.partial(inference.NUTS, jit_compile=False)
HMC = functools.partial(inference.HMC, jit_compile=False)

X = torch.randn(50, 4, generator=torch.Generator().manual_seed(0))
Y = torch.zeros(50, 3)


@ppl.meta_bayesian_net()
def pyro_style(x):
    """Fine for one draw, but `x @ w + b` puts the chain axis of `b` against the data axis."""
    bn = ppl.BayesianNet()
    w = bn.normal("w", torch.zeros(4, 3), std=1., group_ndims=2)
    b = bn.normal("b", torch.zeros(3), std=1., group_ndims=1)
    bn.normal("y", x @ w + b, std=0.1, group_ndims=2)
    return bn


@ppl.meta_bayesian_net()
def pyro_style_mm(x):
    """`torch.mm` only takes matrices: no chain axis can pass."""
    bn = ppl.BayesianNet()
    w = bn.normal("w", torch.zeros(4, 3), std=1., group_ndims=2)
    bn.normal("y", torch.mm(x, w), std=0.1, group_ndims=2)
    return bn


@ppl.meta_bayesian_net()
def broadcasting(x):
    """The same model written to broadcast over leading axes."""
    bn = ppl.BayesianNet()
    w = bn.normal("w", torch.zeros(4, 3), std=1., group_ndims=2)
    b = bn.normal("b", torch.zeros(3), std=1., group_ndims=1)
    bn.normal("y", x @ w + b.unsqueeze(-2), std=0.1, group_ndims=2)
    return bn


def chain_axes_error(*names):
    patterns = [re.escape("carry the chain axes (5,)")] + [
        re.escape(f"'{name}': (5, ") + r"[^)]*\) = chains \(5,\) \+ node" for name in names]
    return pytest.raises(ValueError, match="".join(f"(?=.*{p})" for p in patterns))


def test_potential_names_the_latents_and_their_chain_axes():
    latent = {"w": torch.zeros(5, 4, 3), "b": torch.zeros(5, 3)}
    with chain_axes_error("w", "b") as info:
        Potential(pyro_style(X), {"y": Y}, latent)
    message = str(info.value)
    assert "torch.zeros(n_chains, ...)" in message and "broadcasts over leading axes" in message
    assert "The model's error: RuntimeError" in message  # the original is kept, and chained
    assert isinstance(info.value.__cause__, RuntimeError)


def test_matrix_only_ops_are_reported_too():
    with chain_axes_error("w"):
        Potential(pyro_style_mm(X), {"y": Y}, {"w": torch.zeros(5, 4, 3)})


def test_mcmc_run_reports_it_before_sampling():
    with chain_axes_error("w", "b"):
        inference.mcmc.run(NUTS(), pyro_style(X), {"y": Y}, n_chains=5, n_warmup=2,
                           n_samples=2, progress=False)


def test_zhusuan_sample_reports_it():
    hmc = HMC(step_size=0.01, n_leapfrogs=2)
    with chain_axes_error("w", "b"):
        hmc.sample(pyro_style(X), {"y": Y}, {"w": torch.zeros(5, 4, 3), "b": torch.zeros(5, 3)})


def test_a_broadcasting_model_runs():
    potential = Potential(broadcasting(X), {"y": Y},
                          {"w": torch.zeros(5, 4, 3), "b": torch.zeros(5, 3)})

    log_prob, grad = potential(torch.zeros(5, 15))
    assert log_prob.shape == (5,) and grad.shape == (5, 15)


def test_other_model_errors_pass_through_unchanged():
    @ppl.meta_bayesian_net()
    def zero_scale(x):
        """Runs on prior draws, but w = 0 gives y a zero std, with or without chain axes."""
        bn = ppl.BayesianNet()
        w = bn.normal("w", torch.zeros(4, 3), std=1., group_ndims=2)
        std = w.abs().mean(dim=(-2, -1), keepdim=True)
        bn.normal("y", x @ w, std=std, group_ndims=2)
        return bn

    with pytest.raises(ValueError, match="Normal: argument `std` must be positive"):
        Potential(zero_scale(X), {"y": Y}, {"w": torch.zeros(5, 4, 3)})


def test_a_few_chains_alone_give_their_rows():
    """A potential whose chains are one axis takes a few of its chains' rows alone (what a
    compiled gradient with `rows` is checked against), without touching the chains' last
    good points; one whose chains are several axes says it cannot."""
    potential = Potential(broadcasting(X), {"y": Y},
                          {"w": torch.zeros(5, 4, 3), "b": torch.zeros(5, 3)})
    x = torch.randn(5, 15, generator=torch.Generator().manual_seed(1))
    log_prob, grad = potential(x)
    last_good = potential._last_good
    part = potential(x[[3, 1]])
    assert potential.chains_are_rows and potential._last_good is last_good
    torch.testing.assert_close(part[0], log_prob[[3, 1]])
    torch.testing.assert_close(part[1], grad[[3, 1]])
    grid = Potential(broadcasting(X), {"y": Y},
                     {"w": torch.zeros(2, 3, 4, 3), "b": torch.zeros(2, 3, 3)})
    assert not grid.chains_are_rows
