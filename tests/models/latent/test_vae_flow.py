"""The flow guide of `models.latent.vae_flow`: its log q(z | x) is the change of variables
log q0(z0 | x) - log |det dz/dz0|, here recomputed by hand (the maps written out, the
Jacobian's determinant by autograd), for planar maps and for the IAF."""
import math

import pytest
import torch
from torch import distributions as D

import inference
from models.latent import vae_flow

Z_DIM, HIDDEN, K, N = 3, (8,), 2, 4


def planar_by_hand(flows, z):
    """f_K o ... o f_1 with f(z) = z + u_hat tanh(w^T z + b), w^T u_hat = -1 + softplus(w^T u)."""
    for flow in flows:
        w, u, b = flow.w, flow.u, flow.b
        wu = w @ u
        u_hat = u + (torch.log1p(torch.exp(wu)) - 1 - wu) * w / (w @ w)
        z = z + u_hat * torch.tanh(z @ w + b)[..., None]
    return z


def iaf_by_hand(q_net, z):
    """Each map: (m, s) from its MADE layers; z <- sigmoid(s) z + (1 - sigmoid(s)) m; reverse."""
    for i in range(2):
        out = q_net.layers[f"inv_autoregressive_flow_0_{i}"](z)
        m, s = out[..., :Z_DIM], out[..., Z_DIM:]
        gate = torch.sigmoid(s)
        z = (gate * z + (1 - gate) * m).flip(-1)
    return z


@pytest.mark.parametrize("flow", ["planar", "iaf"])
def test_log_q_is_the_change_of_variables(flow):
    _, q_net = vae_flow.new_templates()
    x = torch.bernoulli(torch.full((N, 10), 0.4))
    torch.manual_seed(3)
    z, log_q = q_net(x, Z_DIM, K, hidden=HIDDEN, flow=flow, flow_length=2)
    assert z.shape == (K, N, Z_DIM) and log_q.shape == (K, N)
    with torch.no_grad():  # perturb the maps away from their initial values
        for p in q_net.parameters():
            p.add_(0.3 * torch.randn_like(p))
    torch.manual_seed(3)
    z, log_q = q_net(x, Z_DIM, K, hidden=HIDDEN, flow=flow, flow_length=2)

    # z0 ~ q0(z0 | x): the same draw, from torch's Normal with the encoder's outputs
    h = q_net.layers["encoder"](x)
    q0 = D.Normal(q_net.layers["z_mean"](h), q_net.layers["z_logstd"](h).exp())
    torch.manual_seed(3)
    z0 = q0.rsample((K,))
    if flow == "planar":
        f = lambda v: planar_by_hand(q_net.layers["planar_normalizing_flow_0"], v)  # noqa: E731
    else:
        f = lambda v: iaf_by_hand(q_net, v)  # noqa: E731
    torch.testing.assert_close(z, f(z0))
    expected = torch.empty(K, N)
    for k in range(K):
        for i in range(N):
            jacobian = torch.autograd.functional.jacobian(f, z0[k, i])
            expected[k, i] = (q0.log_prob(z0)[k, i].sum()
                              - torch.linalg.slogdet(jacobian).logabsdet)
    torch.testing.assert_close(log_q, expected.detach(), rtol=1e-5, atol=1e-5)


def test_importance_weights_of_the_flow_guide_are_unbiased_for_p_x():
    """mean_k p(x, z_k) / q(z_k | x), z_k from the flow guide, estimates p(x) without bias:
    on a model with a 1-d z and 2 pixels, within 5 standard errors of p(x) by quadrature."""
    gen, q_net = vae_flow.new_templates()
    x = torch.tensor([[1., 0.], [0., 1.], [1., 1.]])
    flow = {"flow": "planar", "flow_length": 3}
    vae_flow.elbo_step(gen, q_net, 1, hidden=(4,), **flow)(x)  # create the layers
    with torch.no_grad():
        for p in q_net.parameters():
            p.add_(0.5 * torch.randn_like(p))
        grid = torch.linspace(-10, 10, 8001)
        probs = gen(2, 1, len(grid), 1, hidden=(4,)).observe(z=grid[None, :, None])["x_mean"][0]
        log_px_z = (x[:, None] * probs.log() + (1 - x[:, None]) * (1 - probs).log()).sum(-1)
        p_x = torch.exp(torch.logsumexp(log_px_z + D.Normal(0., 1.).log_prob(grid), -1)
                        + math.log(grid[1] - grid[0]))
        k = 200000
        z, log_q = q_net(x, 1, k, hidden=(4,), **flow)
        model = gen(2, 1, len(x), k, hidden=(4,))
        weights = inference.elbo(model, {"x": x}, {"z": (z, log_q)}).tensor.exp()  # [k, 3]
    mean, se = weights.mean(0), weights.std(0) / math.sqrt(k)
    assert torch.all((mean - p_x).abs() < 5 * se), (mean, p_x, se)


def test_an_unknown_flow_is_refused_by_the_guide():
    _, q_net = vae_flow.new_templates()
    with pytest.raises(ValueError, match=r"unknown flow 'radial'; expected one of "
                                         r"\('planar', 'iaf'\)"):
        q_net(torch.zeros(2, 4), Z_DIM, 1, hidden=HIDDEN, flow="radial")
