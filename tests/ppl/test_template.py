"""Templates: parameters owned by model/guide functions, observe(), nn.Module models.

The VAE below is ZhuSuan's tutorial (docs/tutorials/vae.rst) rewritten with ppl.
"""
import copy

import pytest
import torch
from torch import nn

import ppl

X_DIM, Z_DIM, HIDDEN = 12, 3, 16


def make_vae():
    """A fresh (generator, guide) pair of templates, as in ZhuSuan's VAE tutorial."""

    @ppl.meta_bayesian_net(scope="gen", reuse_variables=True)
    def build_gen(x_dim, z_dim, n, n_particles=1):
        bn = ppl.BayesianNet()
        z = bn.normal("z", torch.zeros(n, z_dim), std=1., group_ndims=1, n_samples=n_particles)
        h = torch.relu(ppl.module("h1", lambda: nn.Linear(z_dim, HIDDEN))(z))
        h = torch.relu(ppl.module("h2", lambda: nn.Linear(HIDDEN, HIDDEN))(h))
        x_logits = ppl.module("x_logits", lambda: nn.Linear(HIDDEN, x_dim))(h)
        bn.deterministic("x_mean", torch.sigmoid(x_logits))
        bn.bernoulli("x", x_logits, group_ndims=1)
        return bn

    @ppl.reuse_variables(scope="q_net")
    def build_q_net(x, z_dim, n_z_per_x):
        bn = ppl.BayesianNet()
        h = torch.relu(ppl.module("h1", lambda: nn.Linear(x.shape[-1], HIDDEN))(x.float()))
        h = torch.relu(ppl.module("h2", lambda: nn.Linear(HIDDEN, HIDDEN))(h))
        z_mean = ppl.module("z_mean", lambda: nn.Linear(HIDDEN, z_dim))(h)
        z_logstd = ppl.module("z_logstd", lambda: nn.Linear(HIDDEN, z_dim))(h)
        bn.normal("z", z_mean, logstd=z_logstd, group_ndims=1, n_samples=n_z_per_x)
        return bn

    return build_gen, build_q_net


def binary_batch(n):
    return (torch.rand(n, X_DIM) < 0.5).to(torch.int32)  # ZhuSuan feeds x as int32


def params_by_name(template):
    return dict(template.named_parameters())


# -- the ZhuSuan VAE ----------------------------------------------------------

def test_vae_tutorial_shapes():
    build_gen, build_q_net = make_vae()
    n, n_particles = 7, 5
    x = binary_batch(n)
    variational = build_q_net(x, Z_DIM, n_particles)
    qz = variational["z"]
    assert qz.shape == (n_particles, n, Z_DIM)
    assert variational.cond_log_prob("z").shape == (n_particles, n)

    model = build_gen(X_DIM, Z_DIM, n, n_particles)
    assert isinstance(model, ppl.MetaBayesianNet)
    bn = model.observe(x=x, z=qz)
    assert bn["z"].tensor is qz.tensor
    assert bn["x"].tensor.dtype == torch.float32 and torch.equal(bn["x"].tensor, x.float())
    assert bn["x_mean"].shape == (n_particles, n, X_DIM)
    assert bn.cond_log_prob("z").shape == (n_particles, n)
    assert bn.cond_log_prob("x").shape == (n_particles, n)
    log_joint = bn.log_joint()
    assert log_joint.shape == (n_particles, n)
    torch.testing.assert_close(log_joint, bn.cond_log_prob("z") + bn.cond_log_prob("x"))
    elbo = (log_joint - variational.cond_log_prob("z")).mean(0)
    assert elbo.shape == (n,)

    elbo.mean().backward()  # gradients reach both templates' layers
    assert all(p.grad is not None for p in build_gen.parameters())
    assert all(p.grad is not None for p in build_q_net.parameters())

    prior = build_gen(X_DIM, Z_DIM, 100, 1).observe()  # generation, as in the tutorial
    assert prior["z"].shape == (1, 100, Z_DIM) and prior["x"].shape == (1, 100, X_DIM)
    assert prior["x_mean"].reshape(-1, 3, 4).shape == (100, 3, 4)
    assert set(prior["x"].unique().tolist()) <= {0., 1.}


def test_parameters_are_created_once_and_shared_across_batch_sizes():
    build_gen, build_q_net = make_vae()
    with pytest.raises(RuntimeError, match="'gen' was never called.*call it first"):
        list(build_gen.parameters())  # nothing says yet which layers the function makes
    build_gen(X_DIM, Z_DIM, 4).observe()
    first = params_by_name(build_gen)
    assert len(first) == 6
    for n, k in [(9, 1), (2, 3)]:
        bn = build_gen(X_DIM, Z_DIM, n, k).observe(x=binary_batch(n))
        assert bn.log_joint().shape == (k, n)
        now = params_by_name(build_gen)
        assert now.keys() == first.keys()
        assert all(now[name] is first[name] for name in first)

    build_q_net(binary_batch(3), Z_DIM, 1)
    q_first = params_by_name(build_q_net)
    build_q_net(binary_batch(11), Z_DIM, 4)
    assert params_by_name(build_q_net) == q_first


def test_parameters_exist_once_a_template_is_called():
    """ZhuSuan's order: call the template, make the optimizer, then observe in the loop.
    The first `parameters()` runs the latest call once (no gradients) to make them."""
    build_gen, build_q_net = make_vae()
    x = binary_batch(4)
    model = build_gen(X_DIM, Z_DIM, 4)
    optimizer = torch.optim.Adam(build_gen.parameters(), lr=0.1)
    params = params_by_name(build_gen)
    assert len(params) == 6 and all(p.grad is None for p in params.values())
    before = {name: p.detach().clone() for name, p in params.items()}
    cost = -model.observe(x=x).log_joint().mean()
    cost.backward()
    optimizer.step()
    assert params_by_name(build_gen) == params  # the run in observe() reused them
    assert all(not torch.equal(p, before[name]) for name, p in params.items())
    assert set(build_gen.state_dict()) == {f"layers.{layer}.{kind}" for layer in
                                           ("h1", "h2", "x_logits") for kind in
                                           ("weight", "bias")}

    with pytest.raises(RuntimeError, match="'q_net' was never called"):
        list(build_q_net.parameters())
    build_q_net(x, Z_DIM, 1)  # a guide runs when called
    assert len(list(build_q_net.parameters())) == 8


def test_state_dict_and_to_of_a_called_template_see_its_layers():
    gen_a, _ = make_vae()
    gen_b, _ = make_vae()
    gen_a(X_DIM, Z_DIM, 2)
    gen_b(X_DIM, Z_DIM, 3)
    gen_b.load_state_dict(gen_a.state_dict())  # both made their layers first
    for name, p in gen_b.named_parameters():
        torch.testing.assert_close(p, dict(gen_a.named_parameters())[name], rtol=0, atol=0)
    gen_c, _ = make_vae()
    gen_c(X_DIM, Z_DIM, 2).template.to(torch.float64)
    assert {p.dtype for p in gen_c.parameters()} == {torch.float64}


def test_a_called_template_that_cannot_run_unobserved_says_what_to_do():
    @ppl.meta_bayesian_net(scope="data_model")
    def model(n):
        bn = ppl.BayesianNet()
        scale = ppl.param("log_scale", torch.zeros(())).exp()
        x = bn.empirical("x", batch_shape=[n])  # no density, no sampler: must be observed
        bn.normal("y", x * scale, std=1.)
        return bn

    model(3)
    with pytest.raises(RuntimeError, match=r"'data_model' has not run yet.*x.*"
                                           r"call `.observe\(...\)` on it once"):
        list(model.parameters())
    with pytest.raises(RuntimeError, match="'data_model' has not run yet"):
        model.state_dict()  # still the same advice, nothing half-made
    model(3).observe(x=torch.zeros(3))
    assert [name for name, _ in model.named_parameters()] == ["params.log_scale"]


# -- log_joint overrides and reuse_variables ------------------------------------

def _regression():
    def model(x):
        bn = ppl.BayesianNet()
        w = bn.normal("w", torch.zeros(x.shape[-1]), std=1., group_ndims=1)
        bn.normal("y", (w * x).sum(-1), std=0.5, group_ndims=1)
        return bn
    return model


def test_log_joint_override_given_to_the_template_applies_to_every_net():
    def tempered(bn):
        return bn.cond_log_prob("w") + 0.5 * bn.cond_log_prob("y")

    x, y = torch.randn(5, 2), torch.randn(5)
    by_argument = ppl.meta_bayesian_net(scope="r1", log_joint=tempered)(_regression())
    by_assignment = ppl.meta_bayesian_net(scope="r2")(_regression())
    by_assignment.log_joint = tempered
    for template in (by_argument, by_assignment):
        assert template.log_joint is tempered
        for n in (5, 3):
            bn = template(x[:n]).observe(y=y[:n])
            torch.testing.assert_close(bn.log_joint(), tempered(bn))
            assert not torch.allclose(bn.log_joint(), bn["w"].cond_log_p + bn["y"].cond_log_p)
    by_assignment.log_joint = None
    bn = by_assignment(x).observe(y=y)
    torch.testing.assert_close(bn.log_joint(), bn["w"].cond_log_p + bn["y"].cond_log_p)
    with pytest.raises(TypeError, match="`log_joint` must be a function.*int"):
        by_assignment.log_joint = 3
    with pytest.raises(TypeError, match="`log_joint` must be a function.*str"):
        ppl.meta_bayesian_net(log_joint="sum")


def test_log_joint_set_on_a_meta_bn_is_not_lost_on_the_next_call():
    """ZhuSuan's examples set `model.log_joint = fn` once; calling the template again (a
    new batch) must keep using it."""
    def tempered(bn):
        return bn.cond_log_prob("w") + 0.5 * bn.cond_log_prob("y")

    template = ppl.meta_bayesian_net(scope="r3")(_regression())
    x, y = torch.randn(5, 2), torch.randn(5)
    model = template(x)
    model.log_joint = tempered
    assert template.log_joint is tempered
    later = template(x[:3])
    assert later.log_joint is tempered
    bn = later.observe(y=y[:3])
    torch.testing.assert_close(bn.log_joint(), tempered(bn))


def test_a_copy_of_a_meta_bn_keeps_its_own_log_joint():
    """ZhuSuan's LNTM: `_model.log_joint = e_obj; proposal = copy(_model);
    proposal.log_joint = log_prior` (the AIS proposal) leaves the model's override as it
    was."""
    def e_obj(bn):
        return bn.cond_log_prob("w") + bn.cond_log_prob("y")

    def log_prior(bn):
        return bn.cond_log_prob("w")

    template = ppl.meta_bayesian_net(scope="r4")(_regression())
    x, y = torch.randn(5, 2), torch.randn(5)
    model = template(x)
    model.log_joint = e_obj
    proposal = copy.copy(model)
    assert proposal.log_joint is e_obj and proposal.template is template
    proposal.log_joint = log_prior
    assert model.log_joint is e_obj and template.log_joint is e_obj
    assert template(x).log_joint is e_obj
    values = {"w": torch.tensor([0.3, -0.2]), "y": y}
    torch.testing.assert_close(proposal.observe(**values).log_joint(),
                               model.observe(**values)["w"].cond_log_p)
    with pytest.raises(TypeError, match="`log_joint` must be a function"):
        proposal.log_joint = "prior"


def test_reuse_variables_is_checked_and_kept():
    """ZhuSuan's flag: parameters are reused whatever its value (documented)."""
    assert "reuse_variables" in ppl.meta_bayesian_net.__doc__
    for flag in (True, False):
        @ppl.meta_bayesian_net(scope="r", reuse_variables=flag)
        def model(x):
            bn = ppl.BayesianNet()
            bn.normal("y", ppl.module("dense", lambda: nn.Linear(2, 1))(x), std=1.)
            return bn

        assert model.reuse_variables is flag
        model(torch.randn(3, 2)).observe()
        first = list(model.parameters())
        model(torch.randn(4, 2)).observe()
        assert list(model.parameters()) == first
    with pytest.raises(TypeError, match="`reuse_variables` must be True or False.*'yes'"):
        ppl.meta_bayesian_net(scope="r", reuse_variables="yes")


def test_two_templates_share_no_parameters():
    gen_a, _ = make_vae()
    gen_b, _ = make_vae()
    gen_a(X_DIM, Z_DIM, 3).observe()
    gen_b(X_DIM, Z_DIM, 3).observe()
    ids_a = {id(p) for p in gen_a.parameters()}
    assert ids_a.isdisjoint(id(p) for p in gen_b.parameters())
    x, z = binary_batch(3), torch.randn(3, Z_DIM)
    before = gen_b(X_DIM, Z_DIM, 3).observe(x=x, z=z).log_joint()
    with torch.no_grad():
        for p in gen_a.parameters():
            p.add_(1.)
    after = gen_b(X_DIM, Z_DIM, 3).observe(x=x, z=z).log_joint()
    torch.testing.assert_close(after, before, rtol=0, atol=0)


def test_state_dict_round_trips_into_a_fresh_template():
    gen_a, q_a = make_vae()
    gen_b, q_b = make_vae()
    x = binary_batch(5)
    for gen, q in [(gen_a, q_a), (gen_b, q_b)]:  # one call each creates the layers
        q(x, Z_DIM, 1)
        gen(X_DIM, Z_DIM, 5).observe()

    def outputs(gen, q):
        torch.manual_seed(7)
        qz = q(x, Z_DIM, 2)["z"]
        bn = gen(X_DIM, Z_DIM, 5, 2).observe(x=x, z=qz)
        return qz.tensor, bn["x_mean"], bn.log_joint()

    different = outputs(gen_b, q_b)
    gen_b.load_state_dict(gen_a.state_dict())
    q_b.load_state_dict(q_a.state_dict())
    expected, got = outputs(gen_a, q_a), outputs(gen_b, q_b)
    assert not torch.equal(different[2], expected[2])
    for e, g in zip(expected, got):
        torch.testing.assert_close(g, e, rtol=0, atol=0)
    assert set(gen_a.state_dict()) == {f"layers.{layer}.{kind}" for layer in
                                       ("h1", "h2", "x_logits") for kind in ("weight", "bias")}


def test_template_moves_to_float64():
    gen, _ = make_vae()
    gen(X_DIM, Z_DIM, 2).observe()
    gen.to(torch.float64)
    assert all(p.dtype == torch.float64 for p in gen.parameters())

    @ppl.meta_bayesian_net()
    def late(x):
        bn = ppl.BayesianNet()
        first = ppl.module("first", lambda: nn.Linear(2, 2))(x)
        if x.shape[0] > 1:  # a layer created only on a later call
            first = ppl.module("second", lambda: nn.Linear(2, 2))(first)
        bn.normal("y", first + ppl.param("shift", torch.zeros(2)), std=1.)
        return bn

    late(torch.zeros(1, 2)).observe()
    late.to(torch.float64)
    bn = late(torch.zeros(3, 2, dtype=torch.float64)).observe()
    assert bn["y"].dtype == torch.float64 and bn.log_joint().dtype == torch.float64
    assert {n: p.dtype for n, p in late.named_parameters()} == {
        name: torch.float64 for name in ("layers.first.weight", "layers.first.bias",
                                         "layers.second.weight", "layers.second.bias",
                                         "params.shift")}


def test_a_template_moved_to_a_device_creates_its_tensors_there():
    """After `.to(device)`, the function's own tensors (the prior's `torch.zeros(n, z_dim)`)
    are made on the device too, as in ZhuSuan's VAE written without a device argument. The
    meta device stands in for CUDA here: without this, `torch.zeros` stays on the CPU and
    the first layer refuses the mix of devices."""
    gen, _ = make_vae()
    gen(X_DIM, Z_DIM, 2).observe()
    gen.to("meta")
    bn = gen(X_DIM, Z_DIM, 2).observe()
    assert bn["z"].tensor.device.type == "meta"
    assert bn.log_joint().device.type == "meta" and bn.log_joint().shape == (1, 2)
    assert torch.zeros(1).device.type == "cpu"  # outside the template's call: unchanged


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_template_moves_to_cuda():
    gen, _ = make_vae()
    gen(X_DIM, Z_DIM, 2).observe()
    gen.to("cuda")
    x = binary_batch(2).cuda()
    bn = gen(X_DIM, Z_DIM, 2).observe(x=x, z=torch.zeros(2, Z_DIM, device="cuda"))
    assert bn.log_joint().device.type == "cuda"


# -- ppl.module / ppl.param ---------------------------------------------------

def test_module_and_param_outside_a_template_name_the_layer():
    with pytest.raises(RuntimeError, match=r"ppl.module\('encoder'\).*outside a template"):
        ppl.module("encoder", lambda: nn.Linear(2, 2))
    with pytest.raises(RuntimeError, match=r"ppl.param\('scale'\).*outside a template"):
        ppl.param("scale", torch.ones(2))

    def plain_model():
        bn = ppl.BayesianNet()
        bn.normal("y", ppl.module("dense", lambda: nn.Linear(1, 1))(torch.ones(1)), std=1.)
        return bn

    with pytest.raises(RuntimeError, match=r"ppl.module\('dense'\)"):
        ppl.as_meta_bn(plain_model).observe()


def test_factories_and_initializers_run_once():
    calls = {"factory": 0, "init": 0}

    def factory():
        calls["factory"] += 1
        return nn.Linear(2, 1)

    def init():
        calls["init"] += 1
        return torch.full((1,), 3.)

    @ppl.meta_bayesian_net(scope="counted")
    def model(x):
        bn = ppl.BayesianNet()
        loc = ppl.module("dense", factory)(x).squeeze(-1) + ppl.param("offset", init)
        bn.normal("y", loc, std=1.)
        return bn

    for n in (1, 4, 2):
        model(torch.randn(n, 2)).observe()
    assert calls == {"factory": 1, "init": 1}
    offset = model.params["offset"]
    assert isinstance(offset, nn.Parameter) and offset.requires_grad
    assert offset.tolist() == [3.]
    assert dict(model.named_parameters())["params.offset"] is offset


def test_param_values_are_copied_not_aliased():
    init = torch.zeros(2)

    @ppl.reuse_variables(scope="guide")
    def guide():
        bn = ppl.BayesianNet()
        bn.normal("w", ppl.param("w_mean", init), logstd=ppl.param("w_logstd", -1.))
        return bn

    bn = guide()
    assert bn["w"].dist.mean is guide.params["w_mean"]
    with torch.no_grad():
        guide.params["w_mean"].add_(1.)
    assert init.tolist() == [0., 0.]
    assert guide.params["w_logstd"].dtype == torch.get_default_dtype()


def test_bad_factories_and_names_are_refused():
    @ppl.meta_bayesian_net()
    def not_a_module():
        ppl.module("dense", lambda: torch.ones(2))

    with pytest.raises(TypeError, match=r"ppl.module\('dense'\).*nn.Module.*Tensor"):
        not_a_module().observe()

    @ppl.meta_bayesian_net()
    def dotted():
        ppl.param("a.b", 0.)

    with pytest.raises(ValueError, match="without '.'.*'a.b'"):
        dotted().observe()

    @ppl.meta_bayesian_net()
    def returns_tensor():
        return torch.zeros(1)

    with pytest.raises(TypeError, match="'returns_tensor'.*BayesianNet.*Tensor"):
        returns_tensor().observe()


# -- observations through templates ------------------------------------------

def test_observe_gives_each_call_its_observations():
    @ppl.meta_bayesian_net(scope="lr")
    def linear_regression(x):
        bn = ppl.BayesianNet()
        w = bn.normal("w", torch.zeros(x.shape[-1]), std=1., group_ndims=1)
        bn.normal("y", (w * x).sum(-1), std=0.5, group_ndims=1)
        return bn

    x = torch.randn(6, 2)
    meta_bn = linear_regression(x)
    w_obs, y_obs = torch.tensor([1., -1.]), torch.randn(6)
    bn1 = meta_bn.observe(w=w_obs)
    assert bn1["w"].tensor is w_obs and not bn1["y"].is_observed()
    torch.testing.assert_close(bn1["y"].dist.mean, x @ w_obs)
    bn2 = meta_bn.observe(y=y_obs)
    assert bn2["y"].tensor is y_obs and not bn2["w"].is_observed()
    assert bn2.observed == {"y": y_obs}
    bn3 = meta_bn.observe()
    assert not bn3["w"].is_observed() and not bn3["y"].is_observed()


def test_explicit_observed_argument_wins_over_observe():
    @ppl.meta_bayesian_net()
    def pinned():
        bn = ppl.BayesianNet(observed={"a": torch.tensor(1.)})
        bn.normal("a", 0., std=1.)
        bn.normal("b", 0., std=1.)
        return bn

    bn = pinned().observe(a=torch.tensor(5.), b=torch.tensor(2.))
    assert bn["a"].tensor.item() == 1. and bn["b"].tensor.item() == 2.


def test_guides_do_not_see_the_models_observations():
    build_gen, build_q_net = make_vae()
    x = binary_batch(3)
    inner = {}

    @ppl.meta_bayesian_net()
    def model_calling_guide():
        inner["q"] = build_q_net(x, Z_DIM, 1)
        bn = ppl.BayesianNet()
        bn.normal("z", torch.zeros(3, Z_DIM), std=1., group_ndims=1)
        return bn

    bn = model_calling_guide().observe(z=torch.zeros(3, Z_DIM))
    assert bn["z"].is_observed() and not inner["q"]["z"].is_observed()


# -- nn.Module models through as_meta_bn --------------------------------------

class Regression(nn.Module):
    """A user's nn.Module whose forward builds a BayesianNet (no template)."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 1))
        self.log_scale = nn.Parameter(torch.tensor(-0.5))

    def forward(self, x):
        bn = ppl.BayesianNet()
        bias = bn.normal("bias", 0., std=1.)
        bn.normal("y", self.net(x).squeeze(-1) + bias, std=self.log_scale.exp(), group_ndims=1)
        return bn


def test_module_model_is_observed_like_a_template():
    module = Regression()
    x, y = torch.randn(5, 3), torch.randn(5)
    meta_bn = ppl.as_meta_bn(module, x)
    assert ppl.as_meta_bn(meta_bn) is meta_bn
    bn = meta_bn.observe(y=y, bias=torch.tensor(0.3))
    assert bn["y"].tensor is y and bn["bias"].is_observed()
    mean = module.net(x).squeeze(-1) + 0.3
    expected = (torch.distributions.Normal(mean, module.log_scale.exp()).log_prob(y).sum()
                + torch.distributions.Normal(0., 1.).log_prob(torch.tensor(0.3)))
    torch.testing.assert_close(bn.log_joint(), expected)
    bn.log_joint().backward()
    assert module.log_scale.grad is not None and module.net[0].weight.grad is not None
    with pytest.raises(ValueError, match=r"\['slope'\]"):
        meta_bn.observe(slope=torch.tensor(1.))
    assert not meta_bn.observe()["y"].is_observed()


def test_as_meta_bn_refuses_non_callables():
    with pytest.raises(TypeError, match="MetaBayesianNet or a callable.*int"):
        ppl.as_meta_bn(3)
