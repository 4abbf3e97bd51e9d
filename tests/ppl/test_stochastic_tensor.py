"""StochasticTensor: ZhuSuan's node API (distribution, log_prob, ...) and its error messages."""
import pytest
import torch

import ppl


def test_zhusuan_node_api():
    bn = ppl.BayesianNet()
    z = bn.normal("z", torch.zeros(3), std=2., group_ndims=1)
    assert z.distribution is z.dist and z.net is bn
    given = torch.tensor([0.5, -1., 2.])
    expected = torch.distributions.Normal(0., 2.).log_prob(given).sum()
    torch.testing.assert_close(z.log_prob(given), expected)
    torch.testing.assert_close(z.prob(given), expected.exp())
    torch.manual_seed(1)
    draws = z.sample(4)
    assert draws.shape == (4, 3) and not torch.equal(draws[0], z.tensor)


def test_unknown_attributes_name_the_node():
    bn = ppl.BayesianNet()
    z = bn.normal("z", 0., std=1.)
    with pytest.raises(AttributeError, match=r"StochasticTensor 'z' has no attribute 'foo'"):
        z.foo
    with pytest.raises(AttributeError, match=r"StochasticTensor 'z'.*'_hidden'"):
        z._hidden
    assert z.shape == () and z.dtype == torch.float32  # tensor attributes still forwarded


@pytest.mark.parametrize("make", [
    lambda bn: bn.implicit("g", torch.randn(4, 2)),
    lambda bn: bn.empirical("g", batch_shape=[4, 2]),
])
def test_log_joint_over_a_node_without_density_names_it(make):
    bn = ppl.BayesianNet(observed={"g": torch.zeros(4, 2)})
    make(bn)
    bn.normal("z", 0., std=1.)
    with pytest.raises(ValueError, match=r"node 'g': (Implicit|Empirical) has no density"):
        bn.log_joint()
    with pytest.raises(ValueError, match=r"node 'g'.*no density"):
        bn["g"].cond_log_p
