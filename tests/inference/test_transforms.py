"""Constrained <-> unconstrained latents: bijections, log-determinants, layout, model checks."""
import math

import pytest
import torch
from torch.distributions import constraints

import inference
import ppl
from inference.mcmc import LatentSpace, Potential, transform_to
from inference.mcmc.transforms import LowerCholeskyTransform


def _free(y, support):
    """The free coordinates of a constrained value (what the Jacobian is taken against)."""
    if support is constraints.simplex:
        return y[..., :-1]
    if support is constraints.lower_cholesky:
        n = y.shape[-1]
        rows, cols = torch.tril_indices(n, n)
        return y[..., rows, cols]
    if support is constraints.corr_cholesky:
        n = y.shape[-1]
        rows, cols = torch.tril_indices(n, n, -1)
        return y[..., rows, cols]
    return y


SUPPORTS = [
    (constraints.positive, (3,)),
    (constraints.nonnegative, (3,)),
    (constraints.unit_interval, (3,)),
    (constraints.interval(-1., 2.), (3,)),
    (constraints.interval(torch.tensor([0., -5., 1.]), torch.tensor([1., 5., 1.5])), (3,)),
    (constraints.greater_than(2.), (3,)),
    (constraints.less_than(-1.), (3,)),
    (constraints.simplex, (4,)),
    (constraints.lower_cholesky, (3, 3)),
    (constraints.corr_cholesky, (3, 3)),
    (constraints.independent(constraints.positive, 1), (3,)),
]


@pytest.mark.parametrize("support,shape", SUPPORTS, ids=[str(s) for s, _ in SUPPORTS])
def test_round_trip_support_and_log_det(support, shape):
    torch.manual_seed(0)
    transform = transform_to(support)
    u_shape = transform.inverse_shape(torch.Size(shape))
    u = torch.randn(u_shape, dtype=torch.float64)
    y = transform(u)
    assert y.shape == shape
    assert bool(support.check(y).all())
    assert torch.allclose(transform.inv(y), u, atol=1e-8)
    # log|det J| against the Jacobian of the map onto the free coordinates.
    jac = torch.autograd.functional.jacobian(lambda v: _free(transform(v), support).reshape(-1),
                                             u.reshape(-1) if u.dim() <= 1 else u)
    jac = jac.reshape(jac.shape[0], -1)
    assert jac.shape[0] == jac.shape[1], "the map must be square onto the free coordinates"
    expected = torch.linalg.slogdet(jac)[1]
    log_det = transform.log_abs_det_jacobian(u, y).sum()
    assert torch.allclose(log_det, expected, atol=1e-8)


def test_real_support_needs_no_transform_and_discrete_is_refused():
    assert transform_to(constraints.real) is None
    assert transform_to(constraints.real_vector) is None
    with pytest.raises(ValueError, match="latent 'k'.*discrete"):
        transform_to(constraints.nonnegative_integer, "k")


def test_lower_cholesky_transform_is_full_rank_bijection():
    t = LowerCholeskyTransform()
    assert t.inverse_shape(torch.Size([5, 4, 4])) == (5, 10)
    assert t.forward_shape(torch.Size([5, 10])) == (5, 4, 4)
    with pytest.raises(ValueError, match="length 7"):
        t.forward_shape(torch.Size([7]))


def test_latent_space_layout_round_trip_with_chain_axes():
    torch.manual_seed(0)
    space = LatentSpace(["a", "s", "w"], [(2, 3), (4,), ()],
                        [transform_to(constraints.positive), transform_to(constraints.simplex),
                         None], chain_shape=(2, 5))
    assert space.dim == 6 + 3 + 1 and space.n_chains == 10
    values = {"a": torch.rand(2, 5, 2, 3) + 0.1,
              "s": torch.distributions.Dirichlet(torch.ones(4)).sample((2, 5)),
              "w": torch.randn(2, 5)}
    x = space.unconstrain(values)
    assert x.shape == (2, 5, 10)
    back, log_det = space.constrain(x, with_log_det=True)
    for k in values:
        assert torch.allclose(back[k], values[k], atol=1e-5)
    assert log_det.shape == (2, 5)
    # the positive block contributes sum(u) = sum(log a)
    expected = values["a"].log().sum((-2, -1)) + \
        transform_to(constraints.simplex).log_abs_det_jacobian(x[..., 6:9], back["s"])
    assert torch.allclose(log_det, expected, atol=1e-5)
    with pytest.raises(ValueError, match="latent 's'"):
        space.unconstrain({**values, "s": torch.rand(2, 5, 3)})


@ppl.meta_bayesian_net()
def _gamma_model(n_chains):
    bn = ppl.BayesianNet()
    rate = bn.gamma("rate", torch.tensor(2.), torch.tensor(3.))
    bn.poisson("y", rate[..., None].expand(n_chains, 4), group_ndims=1)
    return bn


def test_potential_adds_log_det_and_gradient_matches_autograd():
    y = torch.tensor([1., 0., 2., 3.])
    rate = torch.tensor([0.5, 1.5, 3.0])
    potential = Potential(_gamma_model(3), {"y": y}, {"rate": rate})
    x = potential.unconstrain({"rate": rate})
    assert x.shape == (3, 1)
    assert torch.allclose(x[:, 0], rate.log())
    log_prob, grad = potential(x)
    u = x[:, 0].clone().requires_grad_(True)
    lam = u.exp()
    expected = (torch.distributions.Gamma(2., 3.).log_prob(lam)
                + torch.distributions.Poisson(lam[:, None]).log_prob(y).sum(-1) + u)
    assert torch.allclose(log_prob, expected.detach(), atol=1e-5)
    expected_grad, = torch.autograd.grad(expected.sum(), u)
    assert torch.allclose(grad[:, 0], expected_grad, atol=1e-5)
    assert torch.allclose(potential.constrain(x)["rate"], rate)


def test_potential_masks_non_finite_chains():
    def log_joint(v):
        z = v["z"][:, 0]
        return torch.where(z > 1., torch.full_like(z, math.nan), -0.5 * z ** 2)
    potential = Potential(log_joint, None, {"z": torch.zeros(3, 1)})
    x = torch.tensor([[0.5], [2.], [math.inf]])
    log_prob, grad = potential(x)
    assert log_prob[0] == -0.125 and torch.isneginf(log_prob[1:]).all()
    assert torch.equal(grad[1:], torch.zeros(2, 1)) and grad[0, 0] == -0.5


def test_potential_masks_out_of_support_values_in_ppl_models():
    @ppl.meta_bayesian_net()
    def model():
        bn = ppl.BayesianNet()
        bn.beta("p", torch.tensor(2.), torch.tensor(2.))
        return bn

    potential = Potential(model(), None, {"p": torch.full((3,), 0.5)})
    log_prob, grad = potential(torch.tensor([[0.], [math.nan], [1.]]))
    assert torch.isfinite(log_prob[[0, 2]]).all() and torch.isneginf(log_prob[1])
    assert torch.isfinite(grad).all()


# -- bad latents are reported early, by name ----------------------------------
@ppl.meta_bayesian_net()
def _regression(n):
    bn = ppl.BayesianNet()
    w = bn.normal("w", torch.zeros(3), std=1., group_ndims=1)
    scale = bn.half_normal("scale", torch.tensor(1.))
    bn.deterministic("mean", w.sum(-1))
    bn.normal("y", (w.sum(-1) * torch.ones(n, 1)).T, std=scale[..., None], group_ndims=1)
    return bn


def test_errors_name_the_offending_latent():
    model, obs = _regression(5), {"y": torch.zeros(5)}
    good = {"w": torch.zeros(4, 3), "scale": torch.ones(4)}
    potential = Potential(model, obs, good)
    assert potential.chain_shape == (4,) and potential.dim == 4
    with pytest.raises(ValueError, match="latent 'wx' is not a node"):
        Potential(model, obs, {"wx": torch.zeros(4, 3), "scale": torch.ones(4)})
    with pytest.raises(ValueError, match="latent 'mean' is a deterministic node"):
        Potential(model, obs, {**good, "mean": torch.zeros(4)})
    with pytest.raises(ValueError, match=r"\['scale'\] are neither observed nor given"):
        Potential(model, obs, {"w": torch.zeros(4, 3)})
    with pytest.raises(ValueError, match=r"latent 'w' has shape \(4, 2\).*node has shape \(3,\)"):
        Potential(model, obs, {"w": torch.zeros(4, 2), "scale": torch.ones(4)})
    with pytest.raises(ValueError, match="disagree on the chain axes"):
        Potential(model, obs, {"w": torch.zeros(4, 3), "scale": torch.ones(5)})
    with pytest.raises(ValueError, match="latent 'w' must be floating point"):
        Potential(model, obs, {"w": torch.zeros(4, 3, dtype=torch.long), "scale": torch.ones(4)})
    with pytest.raises(ValueError, match="node 'scale'.*support"):
        Potential(model, obs, {"w": torch.zeros(4, 3), "scale": -torch.ones(4)})


def test_log_joint_with_extra_axes_is_a_chain_layout_error():
    @ppl.meta_bayesian_net()
    def ungrouped():
        bn = ppl.BayesianNet()
        bn.normal("w", torch.zeros(3), std=1.)  # forgot group_ndims=1
        return bn

    with pytest.raises(ValueError, match=r"log_joint\(\) has shape \(4, 3\).*chain axes are "
                                         r"\(4,\)"):
        Potential(ungrouped(), None, {"w": torch.zeros(4, 3)})

    def plain(v):
        return -0.5 * v["w"] ** 2  # per coordinate, not per chain
    with pytest.raises(ValueError, match="latent 'b' has shape"):
        Potential(plain, None, {"w": torch.zeros(4, 3), "b": torch.zeros(3, 4)})


def test_model_with_chain_axes_built_in_zhusuan_style():
    @ppl.meta_bayesian_net()
    def gaussian(n_chains):
        bn = ppl.BayesianNet()
        bn.normal("x", torch.zeros(n_chains, 2), std=1., group_ndims=1)
        return bn

    potential = Potential(gaussian(6), None, {"x": torch.zeros(6, 2)})
    assert potential.chain_shape == (6,) and potential.dim == 2


def test_support_depending_on_another_latent_is_refused():
    @ppl.meta_bayesian_net()
    def model():
        bn = ppl.BayesianNet()
        upper = bn.gamma("upper", torch.tensor(2.), torch.tensor(1.))
        bn.uniform("x", torch.zeros(()), upper)
        return bn

    with pytest.raises(ValueError, match="support of latent 'x'.*depends on other latents"):
        Potential(model(), None, {"upper": torch.full((2,), 3.), "x": torch.ones(2)})


def test_plain_callable_supports_argument():
    def log_joint(v):
        return torch.distributions.Gamma(2., 1.).log_prob(v["s"])
    with pytest.raises(ValueError, match="not latents"):
        Potential(log_joint, None, {"s": torch.ones(3)}, supports={"t": constraints.positive})
    potential = Potential(log_joint, None, {"s": torch.ones(3)},
                          supports={"s": constraints.positive})
    x = torch.zeros(3, 1)
    log_prob, _ = potential(x)
    assert torch.allclose(log_prob, torch.distributions.Gamma(2., 1.).log_prob(torch.ones(3)))
    assert inference.mcmc.Potential is Potential


def test_chains_where_the_model_raises_are_found_and_masked():
    """A Cholesky that fails for some chains: those get -inf, the others are untouched."""
    def log_joint(v):
        r = v["r"][:, 0]
        cov = torch.stack([torch.stack([torch.ones_like(r), r], -1),
                           torch.stack([r, torch.ones_like(r)], -1)], -2)
        chol = torch.linalg.cholesky(cov)  # raises for |r| >= 1
        return -chol.diagonal(dim1=-2, dim2=-1).log().sum(-1) - r ** 2

    potential = Potential(log_joint, None, {"r": torch.zeros(6, 1)})
    potential(torch.zeros(6, 1))
    x = torch.tensor([[0.5], [1.5], [-0.2], [3.], [0.], [-2.]])
    log_prob, grad = potential(x)
    good = torch.tensor([True, False, True, False, True, False])
    assert torch.isneginf(log_prob[~good]).all() and (grad[~good] == 0).all()
    expected, _ = Potential(log_joint, None, {"r": torch.zeros(3, 1)})(x[good])
    assert torch.allclose(log_prob[good], expected)


def test_model_errors_everywhere_are_raised_not_masked():
    """If the model also fails at the last good position, its error comes through."""
    calls = []

    def breaks_later(v):
        calls.append(1)
        if len(calls) > 2:
            raise RuntimeError("model broke")
        return -0.5 * (v["z"] ** 2).sum(-1)

    potential = Potential(breaks_later, None, {"z": torch.zeros(3, 2)})  # call 1
    potential(torch.zeros(3, 2))  # call 2
    with pytest.raises(RuntimeError, match="model broke"):
        potential(torch.ones(3, 2))
