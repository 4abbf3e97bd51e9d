"""ZhuSuan's convolutional VAE: shapes through the nets, wrong image shapes refused."""
import pytest
import torch

import inference
from models.latent import conv_vae


def test_shapes_and_a_bound():
    gen, q_net = conv_vae.new_templates()
    x = torch.bernoulli(torch.full((3, 784), 0.2))
    variational = q_net(x, 5, 2)
    assert variational["z"].tensor.shape == (2, 3, 5)
    model = gen(784, 5, 3, 2)
    bound = inference.elbo(model, {"x": x}, variational=variational, axis=0)
    assert bound.tensor.shape == (3,) and torch.isfinite(bound.tensor).all()
    assert model.observe()["x_mean"].shape == (2, 3, 784)


def test_images_that_are_not_28x28_are_refused_naming_x():
    gen, q_net = conv_vae.new_templates()
    with pytest.raises(ValueError, match=r"node 'x': expected a floating-point tensor of shape "
                                         r"\[n, 784\]"):
        q_net(torch.zeros(3, 64), 5, 1)
    with pytest.raises(ValueError, match=r"node 'x': the convolutional VAE makes 28x28 images "
                                         r"\(x_dim=784\), got x_dim=64"):
        gen(64, 5, 3, 1).observe()
