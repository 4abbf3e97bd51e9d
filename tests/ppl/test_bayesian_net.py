"""BayesianNet and StochasticTensor: nodes as tensors, observations, log_joint, errors."""
import inspect
import math
import pydoc

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import stats
from torch import nn

import ppl
from ppl.stochastic_tensor import StochasticTensor


def _normal_node():
    bn = ppl.BayesianNet()
    bn.normal("z", torch.tensor([[0., 1.], [2., 3.], [4., 5.]]), std=0.5)
    return bn


@pytest.fixture(params=["by hand", "by a template"])
def node(request):
    """A latent Normal node of shape [3, 2] and the plain tensor it holds, in a net built
    by hand or by a template."""
    bn = (_normal_node() if request.param == "by hand"
          else ppl.meta_bayesian_net()(_normal_node)().observe())
    return bn["z"], bn["z"].tensor


# -- StochasticTensor as a tensor --------------------------------------------

def test_python_operators_act_on_the_value(node):
    z, t = node
    other = torch.linspace(1., 2., 6).reshape(3, 2)
    pairs = [
        (z + 1, t + 1), (1 + z, 1 + t), (z - other, t - other), (2. - z, 2. - t),
        (z * other, t * other), (3 * z, 3 * t), (z / 2, t / 2), (1. / z, 1. / t),
        (z ** 2, t ** 2), (2 ** z, 2 ** t), (-z, -t), (abs(z), abs(t)), (+z, t),
        (z @ other.T, t @ other.T), (other.T @ z, other.T @ t),
        (z // 1, t // 1), (z % 1, t % 1),
    ]
    by_hand = z._tracer is not None  # its values carry their provenance (ppl.graph)
    for got, expected in pairs:
        assert type(got) is (ppl.graph.Traced if by_hand else torch.Tensor)
        torch.testing.assert_close(got, expected, rtol=0, atol=0)


def test_comparisons_and_indexing(node):
    z, t = node
    for got, expected in [(z > 2, t > 2), (z >= 2, t >= 2), (z < 2, t < 2), (z <= 2, t <= 2),
                          (z == t, torch.ones_like(t, dtype=torch.bool)), (z != t, t != t)]:
        assert got.dtype == torch.bool
        assert torch.equal(got, expected)
    assert torch.equal(z[1], t[1])
    assert torch.equal(z[:, 0], t[:, 0])
    assert torch.equal(z[torch.tensor([2, 0])], t[torch.tensor([2, 0])])
    assert torch.equal(z[z > 2], t[t > 2])
    assert len(z) == 3
    assert [row.tolist() for row in z] == t.tolist()


def test_torch_functions_and_tensor_methods(node):
    z, t = node
    weight, bias = torch.randn(4, 2), torch.randn(4)
    torch.testing.assert_close(torch.exp(z), torch.exp(t))
    torch.testing.assert_close(F.linear(z, weight, bias), F.linear(t, weight, bias))
    torch.testing.assert_close(nn.functional.softplus(z), F.softplus(t))
    torch.testing.assert_close(torch.stack([z, z * 2]), torch.stack([t, t * 2]))
    torch.testing.assert_close(torch.cat([z, t], dim=-1), torch.cat([t, t], dim=-1))
    torch.testing.assert_close(torch.where(z > 2, z, 0.), torch.where(t > 2, t, 0.))
    torch.testing.assert_close(z.sum(-1), t.sum(-1))
    torch.testing.assert_close(z.exp().log(), t)
    torch.testing.assert_close(z.view(6), t.view(6))
    assert z.shape == torch.Size([3, 2]) and z.dtype == torch.float32 and z.dim() == 2
    np.testing.assert_array_equal(np.asarray(z), t.numpy())
    assert float(z[0, 0]) == float(t[0, 0])


def test_node_inside_nn_layer_gives_gradients_to_the_parameters():
    mean = torch.zeros(5, 3, requires_grad=True)
    bn = ppl.BayesianNet()
    z = bn.normal("z", mean, std=1.)  # reparameterized
    layer = nn.Linear(3, 2)
    layer(z).sum().backward()
    torch.testing.assert_close(mean.grad, layer.weight.sum(0).expand(5, 3).detach())
    assert layer.weight.grad is not None


# -- value, distribution, name ------------------------------------------------

def test_tensor_is_one_cached_sample_used_downstream():
    bn = ppl.BayesianNet()
    z = bn.normal("z", torch.zeros(4), std=1.)
    first = z.tensor
    assert z.tensor is first  # one sample, not a new draw per access
    y = bn.normal("y", z * 10., std=1.)
    torch.testing.assert_close(y.dist.mean, first * 10.)
    assert not z.is_observed()
    assert z.name == "z" and isinstance(z.dist, ppl.distributions.Normal)
    assert "z" in repr(z) and "latent" in repr(z)


def test_tensor_is_the_observation_when_observed():
    x = torch.tensor([0.5, -1.])
    bn = ppl.BayesianNet(observed={"x": x})
    node = bn.normal("x", torch.zeros(2), std=2.)
    assert node.is_observed()
    assert node.tensor is x and node.tensor is node.tensor
    expected = stats.norm(0., 2.).logpdf(x.numpy())
    np.testing.assert_allclose(node.cond_log_p.numpy(), expected, rtol=1e-6)


def test_observation_given_as_a_list_becomes_a_tensor():
    bn = ppl.BayesianNet(observed={"x": [0.5, -1.]})
    node = bn.normal("x", torch.zeros(2), std=1.)
    assert isinstance(node.tensor, torch.Tensor) and node.tensor.dtype == torch.float32
    assert node.tensor.tolist() == [0.5, -1.]


def test_cond_log_p_sums_the_last_group_ndims_axes():
    bn = ppl.BayesianNet()
    z = bn.normal("z", torch.zeros(3, 2), std=1., group_ndims=1)
    assert z.cond_log_p.shape == (3,)
    torch.testing.assert_close(z.cond_log_p, z.dist._dist.log_prob(z.tensor).sum(-1))
    assert z.cond_log_p is z.cond_log_p


@pytest.mark.parametrize("n_samples, shape", [(None, (3, 2)), (1, (1, 3, 2)), (4, (4, 3, 2))])
def test_n_samples_adds_a_leading_axis(n_samples, shape):
    bn = ppl.BayesianNet()
    z = bn.normal("z", torch.zeros(3, 2), std=1., group_ndims=1, n_samples=n_samples)
    x = bn.normal("x", z.sum(-1), std=1.)
    assert z.tensor.shape == shape
    assert z.cond_log_p.shape == shape[:-1]
    assert x.tensor.shape == shape[:-1]
    assert bn.log_joint().shape == shape[:-1]


@pytest.mark.parametrize("bad", [0, -2, 2.5, True])
def test_bad_n_samples_names_the_node(bad):
    bn = ppl.BayesianNet()
    with pytest.raises(ValueError, match=r"node 'z'.*n_samples"):
        bn.normal("z", 0., std=1., n_samples=bad)


# -- reading nodes ------------------------------------------------------------

def test_get_getitem_outputs_and_contains():
    bn = ppl.BayesianNet()
    w = bn.normal("w", torch.zeros(3), std=1.)
    mean = bn.deterministic("mean", w.sum())
    y = bn.normal("y", mean, std=1.)
    assert bn["w"] is w and bn.get("y") is y and bn["mean"] is mean
    assert bn.get(["w", "y"]) == [w, y]
    assert bn.outputs("w") is w.tensor
    assert bn.outputs(["mean", "y"])[1] is y.tensor
    assert "w" in bn and "nope" not in bn
    with pytest.raises(KeyError, match=r"'nope'.*w, mean, y"):
        bn.get("nope")
    with pytest.raises(KeyError, match="'nope'"):
        bn["nope"]


def test_cond_log_prob_one_or_many():
    bn = ppl.BayesianNet()
    w = bn.normal("w", torch.zeros(3), std=1., group_ndims=1)
    y = bn.normal("y", w.sum(), std=1.)
    assert bn.cond_log_prob("w") is w.cond_log_p
    log_pw, log_py = bn.cond_log_prob(["w", "y"])
    assert log_pw is w.cond_log_p and log_py is y.cond_log_p
    bn.deterministic("d", w * 2)
    with pytest.raises(ValueError, match="'d' is deterministic"):
        bn.cond_log_prob("d")


# -- log_joint ----------------------------------------------------------------

def _hand_built_net():
    """a ~ N(0, 2); b ~ N(a, 1) x3; c ~ Bernoulli(logits=b) observed; factor -a^2/2."""
    a_val = torch.tensor(0.7)
    b_val = torch.tensor([0.3, -1.2, 2.0])
    c_val = torch.tensor([1., 0., 1.])
    bn = ppl.BayesianNet(observed={"a": a_val, "b": b_val, "c": c_val})
    a = bn.normal("a", 0., std=2.)
    b = bn.normal("b", a * torch.ones(3), std=1., group_ndims=1)
    bn.bernoulli("c", b, group_ndims=1)
    bn.factor("penalty", -0.5 * a ** 2)
    return bn, a_val.item(), b_val.numpy(), c_val.numpy()


def test_log_joint_is_the_sum_of_node_log_probs_and_factors():
    bn, a, b, c = _hand_built_net()
    log_pa = stats.norm(0., 2.).logpdf(a)
    log_pb = stats.norm(a, 1.).logpdf(b).sum()
    log_pc = stats.bernoulli(1. / (1. + np.exp(-b))).logpmf(c).sum()
    expected = log_pa + log_pb + log_pc - 0.5 * a ** 2
    assert bn.log_joint().shape == ()
    np.testing.assert_allclose(bn.log_joint().item(), expected, rtol=1e-6)
    np.testing.assert_allclose(bn.cond_log_prob("c").item(), log_pc, rtol=1e-6)
    assert bn.factors["penalty"].item() == pytest.approx(-0.5 * a ** 2)


def test_log_joint_broadcasts_particles_against_observed_data():
    x = torch.tensor([[0.1, 0.2], [1.0, -1.0], [0.0, 3.0]])
    bn = ppl.BayesianNet(observed={"x": x})
    z = bn.normal("z", torch.zeros(3, 2), std=1., group_ndims=1, n_samples=5)
    bn.normal("x", z, std=0.5, group_ndims=1)
    lj = bn.log_joint()
    assert lj.shape == (5, 3)
    z_np = z.tensor.numpy()
    expected = (stats.norm(0., 1.).logpdf(z_np).sum(-1)
                + stats.norm(z_np, 0.5).logpdf(x.numpy()).sum(-1))
    np.testing.assert_allclose(lj.numpy(), expected, rtol=1e-5)


def test_log_joint_sees_nodes_added_after_an_earlier_call():
    bn = ppl.BayesianNet()
    a = bn.normal("a", 0., std=1.)
    before = bn.log_joint()
    b = bn.normal("b", a, std=1.)
    torch.testing.assert_close(before, a.cond_log_p)
    torch.testing.assert_close(bn.log_joint(), a.cond_log_p + b.cond_log_p)


def test_factor_accepts_numbers_and_errors_on_empty_nets():
    bn = ppl.BayesianNet()
    with pytest.raises(ValueError, match="no stochastic node or factor"):
        bn.log_joint()
    out = bn.factor("const", 1.5)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.get_default_dtype()
    assert bn.log_joint().item() == 1.5


def test_overridden_log_joint_on_the_meta_bn():
    @ppl.meta_bayesian_net(scope="lr")
    def linear_regression(x):
        bn = ppl.BayesianNet()
        w = bn.normal("w", torch.zeros(x.shape[-1]), std=1.)
        bn.normal("y", (w * x).sum(-1), std=0.1)
        return bn

    x = torch.randn(4, 3)
    seen = []

    def custom(bn):
        seen.append(bn)
        return bn.cond_log_prob("w").sum(-1) + bn.cond_log_prob("y").sum(-1)

    meta_bn = linear_regression(x)
    meta_bn.log_joint = custom
    bn = meta_bn.observe(y=torch.zeros(4))
    expected = bn["w"].cond_log_p.sum() + bn["y"].cond_log_p.sum()
    torch.testing.assert_close(bn.log_joint(), expected)
    assert seen == [bn]
    later = linear_regression(x).observe(y=torch.zeros(4))  # the override is the template's
    torch.testing.assert_close(later.log_joint(), later["w"].cond_log_p.sum()
                               + later["y"].cond_log_p.sum())
    assert seen == [bn, later]
    linear_regression.log_joint = None
    with pytest.raises(ValueError, match=r"do not broadcast.*'w': \(3,\), 'y': \(4,\)"):
        linear_regression(x).observe(y=torch.zeros(4)).log_joint()


# -- bad input ----------------------------------------------------------------

def test_duplicate_names_are_refused_naming_the_node():
    bn = ppl.BayesianNet()
    w = bn.normal("w", 0., std=1.)
    with pytest.raises(ValueError, match="'w' already exists"):
        bn.normal("w", 1., std=1.)
    with pytest.raises(ValueError, match="'w' already exists"):
        bn.deterministic("w", w * 2)
    with pytest.raises(ValueError, match="'w' already exists"):
        bn.factor("w", -w ** 2)
    bn.factor("f", -w ** 2)
    with pytest.raises(ValueError, match="'f' already exists"):
        bn.normal("f", 0., std=1.)


def test_non_string_names_and_non_distributions_are_refused():
    bn = ppl.BayesianNet()
    with pytest.raises(TypeError, match="non-empty strings"):
        bn.normal("", 0., std=1.)
    with pytest.raises(TypeError, match=r"node 'z'.*ppl Distribution"):
        bn.stochastic("z", torch.distributions.Normal(0., 1.))


def test_observation_of_wrong_shape_names_node_and_shapes():
    bn = ppl.BayesianNet(observed={"x": torch.zeros(5)})
    with pytest.raises(ValueError, match=r"node 'x'.*\(5,\).*\(3,\)"):
        bn.normal("x", torch.zeros(3), std=1.)
    bn = ppl.BayesianNet(observed={"z": torch.zeros(5, 3, 2)})
    with pytest.raises(ValueError, match=r"node 'z'.*\(5, 3, 2\).*\(4, 3, 2\)"):
        bn.normal("z", torch.zeros(3, 2), std=1., n_samples=4)


def test_observation_of_wrong_dtype_names_node_and_dtype():
    bn = ppl.BayesianNet(observed={"x": torch.tensor([1, 2, 3])})
    with pytest.raises(ValueError, match=r"node 'x'.*floating point.*torch.int64"):
        bn.normal("x", torch.zeros(3), std=1.)


@pytest.mark.parametrize("helper, args, value, support", [
    ("half_normal", (torch.ones(3),), torch.tensor([0.5, -1., 2.]), "non-negative"),
    ("bernoulli", (torch.zeros(3),), torch.tensor([0., 2., 1.]), "0 or 1"),
    ("poisson", (torch.ones(3),), torch.tensor([0., 1.5, 1.]), "integer"),
])
def test_observation_outside_the_support_names_node_and_support(helper, args, value, support):
    bn = ppl.BayesianNet(observed={"x": value})
    with pytest.raises(ValueError, match=rf"node 'x'.*support.*{support}"):
        getattr(bn, helper)("x", *args)


def test_integer_observations_of_a_bernoulli_are_accepted():
    bn = ppl.BayesianNet(observed={"x": torch.tensor([1, 0, 1], dtype=torch.int32)})
    x = bn.bernoulli("x", torch.tensor([0., 1., -1.]))
    expected = [math.log(0.5), -math.log1p(math.e), -math.log1p(math.e)]
    np.testing.assert_allclose(x.cond_log_p.numpy(), expected, rtol=1e-6)


def test_unknown_observed_name_in_observe_is_named():
    @ppl.meta_bayesian_net()
    def model():
        bn = ppl.BayesianNet()
        bn.normal("z", 0., std=1.)
        return bn

    with pytest.raises(ValueError, match=r"\['zz'\].*not nodes.*z"):
        model().observe(zz=torch.tensor(0.))


def test_stochastic_tensor_is_not_a_tensor_subclass():
    bn = ppl.BayesianNet()
    z = bn.normal("z", 0., std=1.)
    assert isinstance(z, StochasticTensor) and not isinstance(z, torch.Tensor)
    assert hash(z) == id(z)
    assert repr(bn) == "BayesianNet(z)"


# -- ZhuSuan 0.4's query / local_log_prob --------------------------------------

def test_query_and_local_log_prob_follow_zhusuan():
    bn = ppl.BayesianNet(observed={"x": torch.ones(3)})
    z = bn.normal("z", torch.zeros(3), std=1.)
    x = bn.normal("x", z, std=0.5)
    h = bn.deterministic("h", z * 2)
    out, log_p = bn.query("z", outputs=True, local_log_prob=True)
    assert out is z.tensor and log_p is z.cond_log_p
    (only_out,) = bn.query("x", outputs=True)
    assert only_out is x.tensor
    pairs = bn.query(["z", "x"], outputs=True, local_log_prob=True)
    assert isinstance(pairs, list) and [len(p) for p in pairs] == [2, 2]
    assert pairs[1][0] is x.tensor and pairs[1][1] is x.cond_log_p
    (h_out,), (z_out,) = bn.query(["h", "z"], outputs=True)
    assert z_out is z.tensor and torch.equal(h_out, h) and type(h_out) is torch.Tensor
    assert bn.local_log_prob("x") is x.cond_log_p
    assert bn.local_log_prob(["z", "x"]) == [z.cond_log_p, x.cond_log_p]
    with pytest.raises(ValueError, match="no query option"):
        bn.query("z")
    with pytest.raises(ValueError, match="'h' is deterministic"):
        bn.query("h", local_log_prob=True)


# -- observations that would be silently ignored -------------------------------

def test_observing_a_deterministic_node_is_an_error():
    bn = ppl.BayesianNet(observed={"h": torch.zeros(2)})
    z = bn.normal("z", torch.zeros(2), std=1.)
    with pytest.raises(ValueError, match="node 'h' is deterministic.*cannot be observed"):
        bn.deterministic("h", z * 2)

    @ppl.meta_bayesian_net()
    def model():
        bn = ppl.BayesianNet()
        z = bn.normal("z", torch.zeros(2), std=1.)
        bn.output("h", z * 2)
        return bn

    with pytest.raises(ValueError, match="node 'h' is deterministic"):
        model().observe(h=torch.zeros(2))


def test_observed_names_the_net_never_defines_are_errors_when_it_is_used():
    bn = ppl.BayesianNet(observed={"x": torch.zeros(3), "typo": torch.zeros(3)})
    z = bn.normal("z", torch.zeros(3), std=1.)
    bn.normal("x", z, std=1.)
    with pytest.raises(ValueError, match=r"log_joint: observed names \['typo'\].*not nodes.*"
                                         r"nodes: z, x"):
        bn.log_joint()
    with pytest.raises(ValueError, match=r"query: observed names \['typo'\]"):
        bn.query("z", outputs=True)

    @ppl.meta_bayesian_net()
    def model():
        bn = ppl.BayesianNet(observed={"w": torch.zeros(())})
        bn.normal("z", 0., std=1.)
        return bn

    with pytest.raises(ValueError, match=r"\['w'\]"):
        model().observe().log_joint()


# -- help(), signatures and docstrings -------------------------------------------

def test_distribution_helpers_have_real_signatures():
    sig = inspect.signature(ppl.BayesianNet.normal)
    assert list(sig.parameters)[:5] == ["self", "name", "mean", "std", "logstd"]
    assert sig.parameters["std"].kind is inspect.Parameter.KEYWORD_ONLY
    assert sig.parameters["group_ndims"].default == 0
    assert sig.parameters["n_samples"].kind is inspect.Parameter.KEYWORD_ONLY
    assert not any(p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in sig.parameters.values())
    bound = sig.bind(None, "z", 0., std=1., group_ndims=1, n_samples=3)
    assert bound.arguments["std"] == 1.
    assert list(inspect.signature(ppl.BayesianNet.gamma).parameters)[:4] == \
        ["self", "name", "alpha", "beta"]
    assert ppl.BayesianNet.half_normal.__name__ == "half_normal"
    bn = ppl.BayesianNet()
    assert list(inspect.signature(bn.student_t).parameters)[:3] == ["name", "df", "loc"]
    assert "Add a stochastic node" in pydoc.render_doc(bn.normal)
    assert "std=None" in pydoc.render_doc(bn.normal)


def test_bayesian_net_and_graph_methods_are_documented():
    assert len(ppl.BayesianNet.__doc__.split()) > 100
    for method in ("markov_blanket", "parents", "children", "query", "local_log_prob"):
        assert len((getattr(ppl.BayesianNet, method).__doc__ or "").split()) > 8, method
