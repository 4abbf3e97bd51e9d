"""Flows: transforms' log-dets and inverses, FlowDistribution's density, shapes, gradients, fit."""
import math
import re

import pytest
import torch
from torch import nn
from torch.autograd.functional import jacobian

import ppl
from ppl.distributions import FlowDistribution, MultivariateNormalCholesky, Normal
from ppl.flows import MADE, AffineCoupling, MaskedAutoregressive, Planar

F64 = torch.float64
DIM = 3

TRANSFORMS = {
    "planar": lambda: Planar(DIM),
    "coupling-even": lambda: AffineCoupling(DIM, 8, parity=0),
    "coupling-odd": lambda: AffineCoupling(DIM, [8, 8], parity=1),
    "coupling-mask": lambda: AffineCoupling(DIM, 8, mask=[1, 1, 0]),
    "iaf": lambda: MaskedAutoregressive(DIM, [8, 8], order=[2, 0, 1]),
    "maf": lambda: MaskedAutoregressive(DIM, 8, sampling="sequential"),
}
INVERTIBLE = [name for name in TRANSFORMS if name != "planar"]



def randomize(module, scale=0.5, seed=0):
    """Random parameters: the zero-initialized output layers would make the identity."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(scale * torch.randn(p.shape, generator=gen, dtype=p.dtype))
    return module


def make(name, seed=0):
    return randomize(TRANSFORMS[name]().double(), seed=seed)


def randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=F64)


def compose(transforms):
    def f(v):
        for t in transforms:
            v = t(v)[0]
        return v
    return f


def jacobian_log_det(f, points):
    """log|det df/dx| at each row of `points`, by autograd."""
    return torch.stack([torch.linalg.slogdet(jacobian(f, p))[1] for p in points])


# -- transforms ---------------------------------------------------------------
@pytest.mark.parametrize("name", TRANSFORMS)
def test_log_det_matches_autograd_jacobian(name):
    t = make(name)
    x = 1.5 * randn(2, 4, DIM)
    y, log_det = t(x)
    assert y.shape == x.shape and log_det.shape == (2, 4)
    expected = jacobian_log_det(lambda v: t(v)[0], x.reshape(-1, DIM)).reshape(2, 4)
    torch.testing.assert_close(log_det, expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize("name", INVERTIBLE)
def test_inverse_undoes_forward(name):
    t = make(name)
    x = 2 * randn(5, DIM)
    torch.testing.assert_close(t.inverse(t(x)[0]), x, atol=1e-10, rtol=0)
    torch.testing.assert_close(t(t.inverse(x))[0], x, atol=1e-10, rtol=0)


def test_made_outputs_depend_only_on_earlier_inputs():
    order = [2, 0, 3, 1]
    position = {coord: k for k, coord in enumerate(order)}
    made = randomize(MADE(4, [16, 16], n_params=2, order=order).double())
    jac = jacobian(made, randn(4))                      # [n_params, dim, dim]
    for i in range(4):
        for j in range(4):
            if position[j] < position[i]:
                assert jac[:, i, j].abs().max() > 0, (i, j)
            else:
                assert (jac[:, i, j] == 0).all(), (i, j)


def test_a_made_narrower_than_its_input_still_connects_every_input():
    made = MADE(40, [10, 10], n_params=1)
    masks = [layer.mask for layer in made.net if hasattr(layer, "mask")]
    paths = masks[0]
    for mask in masks[1:]:
        paths = mask @ paths                            # [outputs, inputs]: number of paths
    reached = paths.sum(0) > 0
    assert reached[:-1].all()                           # every input but the last feeds some output
    assert not reached[-1]


def test_made_registers_each_layer_once():
    made = MADE(4, [8], n_params=2)
    assert made.output is made.net[-1]
    names = [name for name, _ in made.named_modules(remove_duplicate=False)]
    assert len(names) == len(set(id(m) for m in made.modules()))


def test_coupling_keeps_the_masked_coordinates():
    t = make("coupling-even")
    x = randn(6, DIM)
    y = t(x)[0]
    assert torch.equal(y[:, [0, 2]], x[:, [0, 2]]) and not torch.allclose(y[:, 1], x[:, 1])


def test_planar_has_no_inverse_and_keeps_w_dot_u_hat_above_minus_one():
    planar = randomize(Planar(2).double(), scale=3.0)
    with torch.no_grad():
        planar.u.copy_(-3 * planar.w / (planar.w @ planar.w))     # w^T u = -3
    w_dot_u_hat = planar.w @ planar.u_hat()             # m(-3) = -1 + softplus(-3)
    torch.testing.assert_close(w_dot_u_hat, torch.tensor(-1 + math.log1p(math.exp(-3)),
                                                         dtype=F64))
    with pytest.raises(NotImplementedError, match="Planar has no closed-form inverse"):
        planar.inverse(torch.zeros(2))


def test_bad_arguments_are_reported():
    with pytest.raises(ValueError, match="`dim` must be at least 2"):
        AffineCoupling(1, 8)
    with pytest.raises(ValueError, match="`mask` must be a 0/1 tensor of shape \\[3\\]"):
        AffineCoupling(3, 8, mask=[1, 1, 1])
    with pytest.raises(ValueError, match="permutation of range\\(3\\)"):
        MaskedAutoregressive(3, 8, order=[0, 0, 1])
    with pytest.raises(ValueError, match="`hidden` must be"):
        MADE(3, 0)
    with pytest.raises(ValueError, match="Planar: `x` must have shape \\(...\\) \\+ \\[3\\]"):
        Planar(3)(torch.zeros(4, 2))


# -- FlowDistribution: density ------------------------------------------------
def invertible_chain(dim=DIM, seed=0):
    return [randomize(t.double(), scale=0.25, seed=seed + k) for k, t in enumerate([
        AffineCoupling(dim, 8, parity=0), MaskedAutoregressive(dim, 8),
        AffineCoupling(dim, 8, parity=1),
        MaskedAutoregressive(dim, 8, order=list(reversed(range(dim))), sampling="sequential")])]


def test_log_prob_is_the_change_of_variables_formula():
    transforms = invertible_chain()
    std = torch.tensor([1.3, 0.7, 2.0], dtype=F64)
    flow = FlowDistribution(Normal(torch.zeros(DIM, dtype=F64), std=std), transforms)
    y = 2 * randn(6, DIM)
    x = y
    for t in reversed(transforms):
        x = t.inverse(x)
    expected = (torch.distributions.Normal(0., std).log_prob(x).sum(-1)
                - jacobian_log_det(compose(transforms), x))
    torch.testing.assert_close(flow.log_prob(y), expected, atol=1e-8, rtol=0)


def test_cached_log_prob_of_own_samples_is_the_density():
    transforms = [make("planar", seed=1), make("iaf"), make("planar", seed=2)]
    base = MultivariateNormalCholesky(torch.zeros(DIM, dtype=F64),
                                      torch.eye(DIM, dtype=F64) * 0.8)
    flow = FlowDistribution(base, transforms)
    torch.manual_seed(3)
    x0 = base.sample(5)
    torch.manual_seed(3)
    y = flow.sample(5)
    expected = base.log_prob(x0) - jacobian_log_det(compose(transforms), x0)
    torch.testing.assert_close(flow.log_prob(y), expected, atol=1e-8, rtol=0)


def test_cache_and_inversion_agree():
    flow = FlowDistribution(Normal(torch.zeros(DIM, dtype=F64), std=1.), invertible_chain())
    y = flow.sample(7)
    torch.testing.assert_close(flow.log_prob(y), flow.log_prob(y.clone()), atol=1e-10, rtol=0)


def test_density_integrates_to_one_in_1d():
    # Planar layers cannot invert: push a fine base grid forward; 1-D planar maps are monotone.
    transforms = [randomize(Planar(1).double(), scale=1.5, seed=s) for s in range(3)]
    transforms.append(randomize(MaskedAutoregressive(1, 4).double(), seed=3))
    flow = FlowDistribution(Normal(torch.zeros(1, dtype=F64), std=1.), transforms)
    x = torch.linspace(-12, 12, 6001, dtype=F64)[:, None]    # base mass outside: 4e-33
    y, log_density = flow.push_forward(x)
    assert (y[1:, 0] > y[:-1, 0]).all()
    integral = torch.trapezoid(log_density.exp(), y[:, 0])
    assert abs(integral.item() - 1) < 1e-5               # quadrature error here: 3e-7


def test_density_integrates_to_one_on_a_2d_grid():
    flow = FlowDistribution(Normal(torch.zeros(2, dtype=F64), std=1.), invertible_chain(dim=2))
    axis = torch.linspace(-10, 10, 201, dtype=F64)
    grid = torch.stack(torch.meshgrid(axis, axis, indexing="ij"), dim=-1)   # [201, 201, 2]
    density = flow.log_prob(grid).exp()
    integral = torch.trapezoid(torch.trapezoid(density, axis), axis).item()
    assert abs(integral - 1) < 1e-5                      # quadrature error here: 1e-6
    assert density[[0, -1]].max() < 1e-8 and density[:, [0, -1]].max() < 1e-8
    base_density = flow.base.log_prob(grid).sum(-1).exp()
    assert (density - base_density).abs().max() > 0.05   # the flow is far from the identity


# -- FlowDistribution: shapes, nets, graphs -------------------------------------
def test_sample_and_log_prob_shapes():
    flow = FlowDistribution(Normal(torch.zeros(4, 3, 2), std=1.),
                            [Planar(2), AffineCoupling(2, 8)], group_ndims=1)
    assert flow.batch_shape == (4, 3) and flow.value_shape == (2,)
    assert flow.sample().shape == (4, 3, 2)
    assert flow.sample(1).shape == (1, 4, 3, 2)
    z = flow.sample(5)
    assert z.shape == (5, 4, 3, 2) and flow.log_prob(z).shape == (5, 4)

    vector_base = MultivariateNormalCholesky(torch.zeros(3, 2), torch.eye(2))
    flow = FlowDistribution(vector_base, AffineCoupling(2, 8))
    assert flow.batch_shape == (3,) and flow.log_prob(torch.zeros(2)).shape == (3,)
    assert flow.log_prob(torch.zeros(6, 1, 2)).shape == (6, 3)
    with pytest.raises(ValueError, match="does not broadcast"):
        flow.log_prob(torch.zeros(3))


def test_base_grouping_of_the_flow_axis_is_optional():
    chain = invertible_chain(dim=2)
    y = randn(4, 2)
    ungrouped = FlowDistribution(Normal(torch.zeros(2, dtype=F64), std=1.), chain)
    grouped = FlowDistribution(Normal(torch.zeros(2, dtype=F64), std=1., group_ndims=1), chain)
    torch.testing.assert_close(ungrouped.log_prob(y), grouped.log_prob(y))


def test_bad_flows_are_reported():
    with pytest.raises(ValueError, match=r"transforms\[1\] \(Planar\) acts on dim 3"):
        FlowDistribution(Normal(torch.zeros(2), std=1.), [Planar(2), Planar(3)])
    with pytest.raises(ValueError, match="has torch.float64 parameters but the base is"):
        FlowDistribution(Normal(torch.zeros(2), std=1.), [Planar(2).double()])
    with pytest.raises(ValueError, match="scalar base needs a batch axis"):
        FlowDistribution(Normal(0., std=1.), [Planar(1)])
    with pytest.raises(ValueError, match="group_ndims 0 or 1"):
        FlowDistribution(Normal(torch.zeros(3, 2), std=1., group_ndims=2), [Planar(2)])
    with pytest.raises(TypeError, match=r"transforms\[0\] must be a ppl.flows.Transform"):
        FlowDistribution(Normal(torch.zeros(2), std=1.), [nn.Linear(2, 2)])


def test_planar_flow_scores_only_its_own_samples():
    flow = FlowDistribution(Normal(torch.zeros(2), std=1.), [Planar(2)])
    z = flow.sample(3)
    assert flow.log_prob(z).shape == (3,)
    with pytest.raises(ValueError, match=r"transforms\[0\] \(Planar\) has no closed-form inverse"):
        flow.log_prob(z.clone())
    bn = ppl.BayesianNet(observed={"z": torch.zeros(2)})
    bn.flow("z", Normal(torch.zeros(2), std=1.), [Planar(2)])
    with pytest.raises(ValueError, match="node 'z'.*Planar"):
        bn.cond_log_prob("z")


def test_flow_node_in_a_bayesian_net_with_its_graph():
    with ppl.track_graph():
        bn = ppl.BayesianNet()
        mu = bn.normal("mu", torch.zeros(2), std=1., group_ndims=1)
        z = bn.flow("z", Normal(2 * mu, std=torch.ones(2)), [Planar(2), Planar(2)], n_samples=4)
        bn.normal("x", z, std=1., group_ndims=1)
    assert z.shape == (4, 2) and bn.cond_log_prob("z").shape == (4,)
    assert bn.log_joint().shape == (4,)
    torch.testing.assert_close(bn.cond_log_prob("z"), z.dist.log_prob(z.tensor))
    assert bn.parents("z") == {"mu"} and bn.children("z") == {"x"}

    observed = torch.tensor([[0.5, -1.0], [2.0, 0.1]])
    chain = [AffineCoupling(2, 8), MaskedAutoregressive(2, 8)]
    bn = ppl.BayesianNet(observed={"z": observed})
    node = bn.flow_distribution("z", Normal(torch.zeros(2), std=1.), chain)
    torch.testing.assert_close(bn.cond_log_prob("z"), node.dist.log_prob(observed.clone()))


# -- gradients -----------------------------------------------------------------
def test_gradients_reach_every_parameter_through_samples():
    transforms = nn.ModuleList([randomize(Planar(2)), randomize(AffineCoupling(2, 8)),
                                randomize(MaskedAutoregressive(2, 8))])
    mean = torch.zeros(2, requires_grad=True)
    flow = FlowDistribution(Normal(mean, std=1.), transforms)
    assert flow.is_reparameterized
    torch.manual_seed(0)
    (flow.sample(16) ** 2).sum().backward()
    for name, p in transforms.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert mean.grad.abs().sum() > 0


def test_non_reparameterized_base_scores_by_inversion():
    chain = [randomize(AffineCoupling(2, 8))]
    flow = FlowDistribution(Normal(torch.zeros(2), std=1., is_reparameterized=False), chain)
    z = flow.sample(5)
    assert not z.requires_grad
    log_p = flow.log_prob(z)
    torch.testing.assert_close(log_p, flow.log_prob(z.clone()))
    assert log_p.requires_grad                          # score-function gradients at fixed z


def test_path_derivative_stops_gradients_to_parameters_only():
    chain = [randomize(AffineCoupling(2, 8)), randomize(MaskedAutoregressive(2, 8))]
    base = Normal(torch.zeros(2), std=1., use_path_derivative=True)
    flow = FlowDistribution(base, chain)
    z = flow.sample(5)
    log_p = flow.log_prob(z)
    plain = FlowDistribution(Normal(torch.zeros(2), std=1.), chain)
    torch.testing.assert_close(log_p, plain.log_prob(z.detach()))
    assert not flow.log_prob(z.detach()).requires_grad
    assert log_p.requires_grad
    with pytest.raises(ValueError, match=r"\(Planar\) has no closed-form inverse.*path deriv"):
        FlowDistribution(base, [Planar(2)])


# -- fitting -------------------------------------------------------------------
def log_banana(z):
    """Normalized banana: z1 ~ N(0, 1), z2 | z1 ~ N(z1^2 - 1, 0.4^2)."""
    return (torch.distributions.Normal(0., 1.).log_prob(z[..., 0])
            + torch.distributions.Normal(z[..., 0] ** 2 - 1, 0.4).log_prob(z[..., 1]))


def test_reverse_kl_fit_to_a_banana():
    torch.manual_seed(0)

    @ppl.reuse_variables(scope="q")
    def variational(n):
        bn = ppl.BayesianNet()
        layers = [ppl.module("planar", lambda: Planar(2)),
                  ppl.module("iaf", lambda: MaskedAutoregressive(2, [32, 32]))]
        bn.flow("z", Normal(torch.zeros(2), std=1.), layers, n_samples=n)
        return bn

    def kl_estimate(n):
        """KL(q || p) = E_q[log q - log p] (p is normalized): mean and standard error."""
        with torch.no_grad():
            bn = variational(n)
            gap = bn.cond_log_prob("z") - log_banana(bn["z"].tensor)
        return gap.mean().item(), gap.std().item() / math.sqrt(n)

    kl_before, se_before = kl_estimate(20000)
    optimizer = torch.optim.Adam(variational.parameters(), lr=1e-2)
    for _ in range(300):
        bn = variational(128)
        loss = (bn.cond_log_prob("z") - log_banana(bn["z"].tensor)).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    kl_after, se_after = kl_estimate(20000)
    print(f"KL before {kl_before:.3f} +- {se_before:.3f}, after {kl_after:.4f} +- {se_after:.4f}")
    assert kl_before - 5 * se_before > 1.0
    assert kl_after + 5 * se_after < 0.1


# -- ZhuSuan's flow functions (issue 20, item 7) --------------------------------
def base_draws(n=6, seed=0):
    """Samples [n, DIM] of N(0, 0.8^2 I) and their log-density [n]."""
    base = Normal(torch.zeros(DIM, dtype=F64), std=0.8, group_ndims=1)
    samples = 0.8 * randn(n, DIM, seed=seed)
    return samples, base.log_prob(samples)


@ppl.reuse_variables(scope="flows")
def zhusuan_flows(samples, log_probs, kind, update="normal"):
    if kind == "planar":
        return ppl.planar_normalizing_flow(samples, log_probs, n_iters=3)
    return ppl.inv_autoregressive_flow(samples, None, log_probs, ppl.flows.linear_ar, 3,
                                       update=update)


@pytest.mark.parametrize("kind,update", [("planar", None), ("iaf", "normal"), ("iaf", "gru")])
def test_flow_functions_follow_the_change_of_variables_formula(kind, update):
    torch.manual_seed(0)
    guide = ppl.reuse_variables(scope="f")(zhusuan_flows.fn)
    samples, log_probs = base_draws()
    z, log_q = guide(samples, log_probs, kind, update)
    randomize(guide, scale=0.4)     # away from the near-identity start
    z, log_q = guide(samples, log_probs, kind, update)
    assert z.shape == samples.shape and log_q.shape == log_probs.shape

    def transform(point):
        return guide(point[None], torch.zeros(1, dtype=F64), kind, update)[0][0]

    torch.testing.assert_close(log_q, log_probs - jacobian_log_det(transform, samples),
                               atol=1e-10, rtol=0)


@pytest.mark.parametrize("update", ["normal", "gru"])
def test_inv_autoregressive_flow_is_zhusuans_update_then_reverse(update):
    seen = []

    def autoregressive_nn(name, id, z, hidden):
        seen.append((name, id, hidden))
        m = ppl.param(f"{name}_m{id}", lambda: randn(DIM, seed=id))
        s = ppl.param(f"{name}_s{id}", lambda: randn(DIM, seed=10 + id).exp())
        return m.expand_as(z), s.expand_as(z)   # constant in z: an elementwise affine map

    @ppl.reuse_variables(scope="q")
    def guide(samples, log_probs):
        return ppl.inv_autoregressive_flow(samples, "h", log_probs, autoregressive_nn, 2,
                                           update)

    samples, log_probs = base_draws()
    z, log_q = guide(samples, log_probs)
    assert seen == [("inv_autoregressive_flow_0", 0, "h"), ("inv_autoregressive_flow_0", 1, "h")]
    expected, log_expected = samples, log_probs
    for i in range(2):
        m = guide.params[f"inv_autoregressive_flow_0_m{i}"]
        s = guide.params[f"inv_autoregressive_flow_0_s{i}"]
        if update == "gru":
            gate = torch.sigmoid(s)
            expected = gate * expected + (1 - gate) * m
            log_expected = log_expected - gate.log().sum()
        else:
            expected = s * expected + m
            log_expected = log_expected - s.log().sum()
        expected = expected.flip(-1)
    torch.testing.assert_close(z, expected)
    torch.testing.assert_close(log_q, log_expected)


def test_flow_layers_belong_to_the_template_one_set_per_call():
    @ppl.reuse_variables(scope="q")
    def guide(samples, log_probs):
        # As ZhuSuan's vae_nf: two calls, each with its own layers.
        samples, log_probs = ppl.planar_normalizing_flow(samples, log_probs, n_iters=4)
        return ppl.planar_normalizing_flow(samples, log_probs, n_iters=4)

    samples, log_probs = base_draws()
    z, log_q = guide(samples, log_probs)
    assert set(guide.layers) == {"planar_normalizing_flow_0", "planar_normalizing_flow_1"}
    params = list(guide.parameters())
    assert len(params) == 2 * 4 * 3 and all(p.dtype == F64 for p in params)
    z2, log_q2 = guide(samples, log_probs)                # a later run reuses them
    assert [id(p) for p in guide.parameters()] == [id(p) for p in params]
    torch.testing.assert_close((z2, log_q2), (z, log_q))
    (-log_q.sum()).backward()
    assert all(p.grad is not None for p in params)


def test_flow_functions_named_explicitly_and_with_linear_ar():
    @ppl.reuse_variables(scope="q")
    def guide(samples, log_probs):
        samples, log_probs = ppl.planar_normalizing_flow(samples, log_probs, 2, name="pf")
        return ppl.inv_autoregressive_flow(samples, None, log_probs, ppl.flows.linear_ar, 2,
                                           name="iaf")

    guide(*base_draws())
    assert set(guide.layers) == {"pf", "iaf_0", "iaf_1"}
    made = guide.layers["iaf_0"]
    assert isinstance(made, MADE) and len(list(made.net)) == 1     # linear: no hidden layer
    assert 0 < made.output.weight.abs().max() < 0.05                # N(0, 0.005^2), as ZhuSuan
    assert ppl.planar_normalizing_flow is ppl.flows.planar_normalizing_flow


def test_flow_functions_bad_input():
    samples, log_probs = base_draws()
    with pytest.raises(RuntimeError, match="planar_normalizing_flow was called outside a "
                                           "template call.*@ppl.reuse_variables"):
        ppl.planar_normalizing_flow(samples, log_probs, 2)

    @ppl.reuse_variables(scope="q")
    def guide(samples, log_probs, n_iters=2, update="normal", iaf=False):
        if iaf:
            return ppl.inv_autoregressive_flow(samples, None, log_probs, ppl.flows.linear_ar,
                                               n_iters, update)
        return ppl.planar_normalizing_flow(samples, log_probs, n_iters)

    with pytest.raises(ValueError, match=re.escape("`log_probs` must have the shape of "
                                                   "`samples` without its last axis, (6,)")):
        guide(samples, log_probs[:3])
    with pytest.raises(ValueError, match="`samples` must be a floating-point tensor"):
        guide(samples[0], log_probs[0])
    with pytest.raises(ValueError, match="`n_iters` must be a positive int"):
        guide(samples, log_probs, n_iters=0)
    with pytest.raises(ValueError, match="`update` must be 'normal' or 'gru'"):
        guide(samples, log_probs, update="lstm", iaf=True)
    guide(samples, log_probs)
    with pytest.raises(ValueError, match="has 2 layers on d=3, but this call asks for "
                                         "n_iters=5"):
        guide(samples, log_probs, n_iters=5)


def test_planar_normalizing_flow_fits_a_banana():
    torch.manual_seed(0)

    @ppl.reuse_variables(scope="q")
    def variational(n):
        samples = torch.randn(n, 2)
        log_probs = torch.distributions.Normal(0., 1.).log_prob(samples).sum(-1)
        return ppl.planar_normalizing_flow(samples, log_probs, n_iters=16)

    def kl_estimate(n):
        with torch.no_grad():
            z, log_q = variational(n)
            gap = log_q - log_banana(z)
        return gap.mean().item(), gap.std().item() / math.sqrt(n)

    kl_before, se_before = kl_estimate(20000)
    optimizer = torch.optim.Adam(variational.parameters(), lr=1e-2)
    for _ in range(300):
        z, log_q = variational(128)
        loss = (log_q - log_banana(z)).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    kl_after, se_after = kl_estimate(20000)
    print(f"KL before {kl_before:.3f} +- {se_before:.3f}, after {kl_after:.4f} +- {se_after:.4f}")
    assert kl_before - 5 * se_before > 1.0   # the start (near the identity) is ~6.9 nats off
    assert kl_after + 5 * se_after < 0.3     # measured 0.23 +- 0.004 (seed 0)


def test_flow_numbering_per_run_with_nested_templates():
    @ppl.reuse_variables(scope="inner")
    def inner(samples, log_probs):
        return ppl.planar_normalizing_flow(samples, log_probs, 1)

    @ppl.reuse_variables(scope="outer")
    def outer(samples, log_probs):
        samples, log_probs = ppl.planar_normalizing_flow(samples, log_probs, 1)
        samples, log_probs = inner(samples, log_probs)
        return ppl.planar_normalizing_flow(samples, log_probs, 1)

    for _ in range(3):
        outer(*base_draws())
    assert set(outer.layers) == {"planar_normalizing_flow_0", "planar_normalizing_flow_1"}
    assert set(inner.layers) == {"planar_normalizing_flow_0"}


def test_vae_nf_translation_trains_the_flows_through_elbo():
    """ZhuSuan's examples/normalizing_flows/vae_nf.py pattern: query, two flows, elbo."""
    import inference

    @ppl.meta_bayesian_net(scope="gen")
    def build_gen(n, n_particles):
        bn = ppl.BayesianNet()
        z = bn.normal("z", torch.zeros(n, DIM), std=1., group_ndims=1, n_samples=n_particles)
        bn.normal("x", z, std=0.5, group_ndims=1)
        return bn

    @ppl.reuse_variables(scope="q_net")
    def build_q_net(x, n_particles):
        bn = ppl.BayesianNet()
        mean = ppl.module("mean", lambda: nn.Linear(DIM, DIM))(x)
        bn.normal("z", mean, std=1., group_ndims=1, n_samples=n_particles)
        qz_samples, log_qz = bn.query("z", outputs=True, local_log_prob=True)
        qz_samples, log_qz = ppl.planar_normalizing_flow(qz_samples, log_qz, n_iters=2)
        return ppl.planar_normalizing_flow(qz_samples, log_qz, n_iters=2)

    x = torch.randn(5, DIM)
    qz_samples, log_qz = build_q_net(x, 4)
    lower_bound = inference.elbo(build_gen(5, 4), {"x": x}, {"z": [qz_samples, log_qz]}, axis=0)
    lower_bound.sgvb().mean().backward()
    assert set(build_q_net.layers) == {"mean", "planar_normalizing_flow_0",
                                       "planar_normalizing_flow_1"}
    assert all(p.grad is not None and torch.isfinite(p.grad).all()
               for p in build_q_net.parameters())
