"""Models evaluate under `torch.inference_mode()` (an evaluation loop's usual setting), and
what needs a gradient says it cannot run there instead of returning zero gradients."""
import pytest
import torch

import inference
import ppl


@ppl.meta_bayesian_net()
def regression(x):
    bn = ppl.BayesianNet()
    w = bn.normal("w", torch.zeros(3), std=1., group_ndims=1)
    bn.normal("y", (x * w.unsqueeze(-2)).sum(-1), std=0.4375, group_ndims=1)  # w: [chains, 3]
    return bn


X = torch.randn(20, 3, generator=torch.Generator().manual_seed(0))
Y = X @ torch.tensor([1., -1., 0.5])


def test_log_joint_under_inference_mode_equals_the_one_under_no_grad():
    # scalar arguments (std=1.) are kept as tensors between calls, keyed on their version
    # counter, which inference tensors do not have
    # (an unusual std, met first here: made under inference mode)
    w = torch.randn(4, 3, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        first = regression(X).observe(y=Y, w=w).log_joint()
        again = regression(X).observe(y=Y, w=w).log_joint()
    with torch.no_grad():
        expected = regression(X).observe(y=Y, w=w).log_joint()
    torch.testing.assert_close(first, expected, rtol=0, atol=0)
    torch.testing.assert_close(again, expected, rtol=0, atol=0)


def test_support_checks_run_under_inference_mode():
    with torch.inference_mode():
        std = torch.tensor(-1.)
        with pytest.raises(ValueError, match="std"):
            ppl.distributions.Normal(torch.zeros(2), std=std)


def test_mcmc_under_inference_mode_raises_instead_of_sampling_with_zero_gradients():
    with torch.inference_mode(), pytest.raises(RuntimeError, match="inference_mode"):
        inference.mcmc.run(inference.NUTS(jit_compile=False), regression(X), {"y": Y},
                           n_chains=2, n_warmup=5, n_samples=5, progress=False)
