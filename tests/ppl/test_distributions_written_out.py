"""Normal and Bernoulli sample and score with torch's formulas written out (for speed).

Each written-out path is compared with `torch.distributions` itself: values to
1e-6 (float64), gradients of the node's own draw (the eps shortcut) and of
path-derivative scores, the batch shape, and the torch object built on demand. A
Normal's std broadcast over many values is divided into once, not once per value.
"""
import math

import pytest
import torch
import torch.distributions as td
from torch.fx.experimental.proxy_tensor import make_fx

import ppl.distributions as D
from ppl.distributions.base import values_trusted

TOL = dict(rtol=1e-6, atol=1e-6)


def _normal_cases():
    """(name, make(mean, spread) -> ppl Normal, torch scale of that Normal)."""
    return [
        ("std tensor", lambda m, s: D.Normal(m, std=s.exp()), lambda m, s: s.exp()),
        ("logstd tensor", lambda m, s: D.Normal(m, logstd=s), lambda m, s: s.exp()),
        ("std number 1", lambda m, s: D.Normal(m, std=1.), lambda m, s: torch.ones_like(m)),
        ("std number 2.5", lambda m, s: D.Normal(m, std=2.5),
         lambda m, s: torch.full_like(m, 2.5)),
    ]


@pytest.mark.parametrize("name,make,scale", _normal_cases(), ids=[c[0] for c in _normal_cases()])
def test_normal_log_prob_equals_torch(name, make, scale):
    gen = torch.Generator().manual_seed(0)
    mean = torch.randn(4, 3, dtype=torch.float64, generator=gen)
    spread = 0.5 * torch.randn(3, dtype=torch.float64, generator=gen)
    given = 3. * torch.randn(2, 1, 3, dtype=torch.float64, generator=gen)  # broadcasts
    expected = td.Normal(mean, scale(mean, spread)).log_prob(given)
    got = make(mean, spread).log_prob(given)
    assert got.shape == expected.shape == (2, 4, 3)
    torch.testing.assert_close(got, expected, **TOL)


@pytest.mark.parametrize("std", ["tensor", "number"])
def test_a_broadcast_std_divides_once_not_once_per_value(std):
    """A likelihood's std [n, 1] broadcast over [n, 500] values: the log density and its
    gradient divide no [n, 500] tensor (divisions are the costliest elementwise op)."""
    given = torch.randn(4, 500, dtype=torch.float64)

    def log_density_and_gradient(mean, log_std):
        inputs = [mean.requires_grad_()] + ([log_std.requires_grad_()] if std == "tensor" else [])
        total = D.Normal(mean, std=log_std.exp() if std == "tensor" else 2.5).log_prob(given)
        return torch.autograd.grad(total.sum(), inputs)

    with values_trusted():  # as `inference.mcmc.compile` traces a model
        graph = make_fx(log_density_and_gradient)(torch.zeros(4, 500, dtype=torch.float64),
                                                    torch.zeros(4, 1, dtype=torch.float64))
    divisions = [node for node in graph.graph.nodes
                 if node.op == "call_function" and "div" in str(node.target)
                 and node.meta["val"].numel() >= given.numel()]
    assert divisions == []


def test_normal_log_prob_in_float32_matches_torch_to_float_precision():
    mean, logstd = torch.randn(5, 2), torch.randn(5, 2)
    given = torch.randn(3, 5, 2) * 4.
    torch.testing.assert_close(D.Normal(mean, logstd=logstd).log_prob(given),
                               td.Normal(mean, logstd.exp()).log_prob(given),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("use_std", [False, True])
def test_own_draw_scored_by_eps_has_torchs_value_and_gradient(use_std):
    """log q(z(theta)) by the eps shortcut: same value and total derivative as torch's."""
    torch.manual_seed(1)
    mean = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    spread = (0.3 * torch.randn(4, 3, dtype=torch.float64)).requires_grad_()
    dist = (D.Normal(mean, std=spread.exp(), group_ndims=1) if use_std
            else D.Normal(mean, logstd=spread, group_ndims=1))
    z = dist.sample(5)
    ours = dist.log_prob(z)
    theirs = td.Normal(mean, spread.exp()).log_prob(z).sum(-1)
    torch.testing.assert_close(ours, theirs, **TOL)
    # d/dmean is 0 in total: the shortcut does not even depend on mean (None -> zeros)
    ours_grads = torch.autograd.grad(ours.sum(), [mean, spread], retain_graph=True,
                                     materialize_grads=True)
    theirs_grads = torch.autograd.grad(theirs.sum(), [mean, spread])
    for a, b in zip(ours_grads, theirs_grads):
        torch.testing.assert_close(a, b, **TOL)


def test_own_draw_matches_torch_rsample_for_the_same_seed():
    mean, logstd = torch.randn(6), torch.randn(6)
    torch.manual_seed(3)
    ours = D.Normal(mean, logstd=logstd).sample(4)
    torch.manual_seed(3)
    theirs = td.Normal(mean, logstd.exp()).rsample((4,))
    torch.testing.assert_close(ours, theirs, **TOL)


def test_a_copy_of_the_own_draw_takes_the_general_formula_with_the_same_value():
    mean = torch.randn(3, dtype=torch.float64)
    dist = D.Normal(mean, logstd=torch.zeros(3, dtype=torch.float64))
    z = dist.sample()
    torch.testing.assert_close(dist.log_prob(z.clone()), dist.log_prob(z), **TOL)


@pytest.mark.parametrize("use_number", [False, True])
def test_path_derivative_score_depends_on_parameters_only_through_the_draw(use_number):
    torch.manual_seed(2)
    mean = torch.randn(4, dtype=torch.float64, requires_grad=True)
    logstd = (0.2 * torch.randn(4, dtype=torch.float64)).requires_grad_()
    dist = (D.Normal(mean, std=1.5, use_path_derivative=True) if use_number
            else D.Normal(mean, logstd=logstd, use_path_derivative=True))
    z = dist.sample()
    ours = dist.log_prob(z)
    scale = torch.full_like(mean, 1.5) if use_number else logstd.exp()
    theirs = td.Normal(mean.detach(), scale.detach()).log_prob(z)
    torch.testing.assert_close(ours, theirs, **TOL)
    wrt = [mean] if use_number else [mean, logstd]
    for a, b in zip(torch.autograd.grad(ours.sum(), wrt, retain_graph=True),
                    torch.autograd.grad(theirs.sum(), wrt)):
        torch.testing.assert_close(a, b, **TOL)


@pytest.mark.parametrize("param", ["logits", "probs"])
def test_bernoulli_log_prob_equals_torch(param):
    gen = torch.Generator().manual_seed(4)
    logits = 3. * torch.randn(4, 5, dtype=torch.float64, generator=gen)
    given = torch.bernoulli(torch.full((2, 1, 5), 0.4, dtype=torch.float64), generator=gen)
    kwargs = {"logits": logits} if param == "logits" else {"probs": torch.sigmoid(logits)}
    expected = td.Bernoulli(**kwargs).log_prob(given)
    got = D.Bernoulli(**kwargs).log_prob(given)
    assert got.shape == (2, 4, 5)
    torch.testing.assert_close(got, expected, **TOL)


def test_torch_object_is_built_on_demand_with_the_same_shapes_and_math():
    mean, logstd = torch.randn(4, 1), torch.randn(3)
    normal = D.Normal(mean, logstd=logstd)
    assert "_dist" not in vars(normal)
    assert normal.batch_shape == td.Normal(mean, logstd.exp()).batch_shape == (4, 3)
    assert normal.value_shape == ()
    torch.testing.assert_close(normal.std, logstd.exp().expand(4, 3))
    torch.testing.assert_close(normal._dist.entropy(), td.Normal(mean, logstd.exp()).entropy())
    bernoulli = D.Bernoulli(torch.zeros(2, 3))
    assert bernoulli.batch_shape == (2, 3) and bernoulli.sample(7).shape == (7, 2, 3)


def test_parameters_that_do_not_broadcast_are_reported_at_construction():
    with pytest.raises(ValueError, match=r"Normal: parameters do not broadcast.*mean: \(3,\)"):
        D.Normal(torch.zeros(3), logstd=torch.zeros(4))


def test_a_remembered_number_tensor_changed_in_place_is_not_reused():
    first = D.Normal(0., std=2.)
    first.params["std"].add_(1.)
    assert float(D.Normal(0., std=2.).params["std"]) == 2.
    assert math.isclose(float(D.Normal(0., std=2.).log_prob(torch.tensor(0.))),
                        -0.5 * math.log(2 * math.pi) - math.log(2.), rel_tol=1e-6)
