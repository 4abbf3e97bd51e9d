"""The two-stochastic-layer IWAE (Burda et al. 2015): its bound L_k recomputed by hand."""
import math

import torch
from torch import distributions as D
from torch import nn

import inference
from models.latent import iwae

DIMS, HIDDEN, K = (4, 2), (6, 6), 5


def normal(mean_layer, logstd_layer, h):
    return D.Normal(mean_layer(h), logstd_layer(h).exp())


def test_the_two_layer_bound_by_hand():
    gen, q_net = iwae.new_templates(layers=2)
    x = torch.bernoulli(torch.full((3, 7), 0.3))
    torch.manual_seed(1)
    model = gen(7, DIMS, len(x), K, hidden=HIDDEN)
    variational = q_net(x, DIMS, K, hidden=HIDDEN)
    bound = inference.iw_objective(model, {"x": x}, variational=variational, axis=0).tensor
    z1, z2 = variational["z1"].tensor, variational["z2"].tensor
    assert z1.shape == (K, 3, 4) and z2.shape == (K, 3, 2) and bound.shape == (3,)

    g, q = gen.layers, q_net.layers
    assert isinstance(g["h1"][1], nn.Tanh) and q["h2"][0].out_features == 3  # half of 6
    with torch.no_grad():
        log_q = (normal(q["z1_mean"], q["z1_logstd"], q["encoder"](x)).log_prob(z1).sum(-1)
                 + normal(q["z2_mean"], q["z2_logstd"], q["h2"](z1)).log_prob(z2).sum(-1))
        log_p = (D.Normal(0., 1.).log_prob(z2).sum(-1)
                 + normal(g["z1_mean"], g["z1_logstd"], g["h2"](z2)).log_prob(z1).sum(-1)
                 + D.Bernoulli(logits=g["x_logits"](g["h1"](z1))).log_prob(x).sum(-1))
        expected = torch.logsumexp(log_p - log_q, dim=0) - math.log(K)
    torch.testing.assert_close(bound.detach(), expected)


def test_the_two_layer_step_trains():
    gen, q_net = iwae.new_templates(layers=2)
    x = torch.tensor([[1., 1., 1., 0., 0., 0., 1.], [0., 0., 0., 1., 1., 1., 0.]]).repeat(8, 1)
    step = iwae.iw_step(gen, q_net, DIMS, n_particles=K, hidden=HIDDEN)
    trainer = inference.Trainer({"model": gen, "guide": q_net},
                                lambda params: torch.optim.Adam(params, lr=1e-2), progress=False,
                                trace=False)
    history = trainer.fit(step, [x] * 10, n_epochs=3)
    assert history[-1] > history[0] + 1.0
