"""The autoregressive zoo's networks: exact autoregressive structure, naive-loop log-probs."""
import itertools
import math

import pytest
import torch

from models.autoregressive import common
from models.autoregressive.fvsbn import fvsbn_net
from models.autoregressive.made import MaskedMADE, ensemble_log_lik
from models.autoregressive.nade import NADE
from models.autoregressive.pixelcnn import MaskedConv2d, PixelCNN
from models.autoregressive.rnade import RNADE
from models.autoregressive.wavenet import WaveNet
from ppl.distributions import Autoregressive
from ppl.distributions.autoregressive import GaussianMixtureFamily


def dependence(net, x, value_shape):
    """D[i, j] = max over parameters of |d out_i / d x_j| (flattened dimensions)."""
    dim = math.prod(value_shape)
    jac = torch.autograd.functional.jacobian(lambda v: net(v.reshape(1, *value_shape))[0], x)
    return jac.reshape(-1, dim, dim).abs().amax(0)


def assert_autoregressive(dep, order):
    """Zero where j is not before i in `order`; some earlier input does matter."""
    position = torch.empty(len(order), dtype=torch.long)
    position[torch.tensor(order)] = torch.arange(len(order))
    later = position[None, :] >= position[:, None]  # [i, j]: j at or after i
    assert dep[later].max().item() == 0.
    assert dep[~later].max().item() > 0.


@pytest.mark.parametrize("build, value_shape", [
    (lambda: fvsbn_net(12), (12,)),
    (lambda: NADE(12, 7), (12,)),
    (lambda: RNADE(12, 7, 2), (12,)),
    (lambda: WaveNet(4, 4), (12,)),
    (lambda: PixelCNN(4, 3), (1, 5, 5)),
    (lambda: PixelCNN(4, 3), (1, 8, 3)),
])
def test_networks_are_exactly_autoregressive_in_natural_order(build, value_shape):
    torch.manual_seed(0)
    net = build()
    x = torch.rand(value_shape).round()
    assert_autoregressive(dependence(net, x, value_shape), list(range(math.prod(value_shape))))


@pytest.mark.parametrize("direct", [False, True])
def test_every_made_mask_is_autoregressive_in_its_own_order(direct):
    torch.manual_seed(0)
    net = MaskedMADE(10, [20, 20], n_masks=4, seed=3, direct=direct)
    if direct:  # non-zero direct weights, so that a wrong mask would show
        torch.nn.init.normal_(net.direct)
    orders = set()
    for k in range(4):
        net.use_mask(k)
        orders.add(tuple(net.order))
        assert_autoregressive(dependence(net, torch.rand(10).round(), (10,)), net.order)
        assert Autoregressive(net, "bernoulli", [10]).order == net.order
    assert len(orders) == 4


def test_pixelcnn_masks_a_and_b():
    a = MaskedConv2d(1, 1, 3, "A").mask
    b = MaskedConv2d(1, 1, 3, "B").mask
    assert a.tolist() == [[1, 1, 1], [1, 0, 0], [0, 0, 0]]
    assert b.tolist() == [[1, 1, 1], [1, 1, 0], [0, 0, 0]]
    with pytest.raises(ValueError, match="mask_type"):
        MaskedConv2d(1, 1, 3, "C")


def test_nade_log_prob_matches_a_naive_loop():
    """log p(x) = sum_d log Bernoulli(x_d; sigmoid(b_d + V_d . sigmoid(c + W[:, :d] x_<d)))."""
    torch.manual_seed(0)
    net = NADE(9, 5)
    x = torch.rand(4, 9).round()
    naive = torch.zeros(4)
    for n, d in itertools.product(range(4), range(9)):
        h = torch.sigmoid(net.c + net.W[:, :d] @ x[n, :d])
        p = torch.sigmoid(net.b[d] + net.V[d] @ h)
        naive[n] += torch.log(p if x[n, d] == 1 else 1 - p)
    fast = common.build_model(net, value_shape=(9,), observed={"x": x}).log_joint()
    torch.testing.assert_close(fast, naive)


@pytest.mark.parametrize("block", [1, 4, 9, 28])
def test_nade_blocks_give_the_per_dimension_recurrence_exactly(block):
    """The blocked forward (ragged last block included) equals the recurrence
    a_{d+1} = a_d + W[:, d] x_d in float64, logits and gradients."""
    torch.manual_seed(1)
    net = NADE(9, 5, block=block).double()
    x = torch.rand(6, 9, dtype=torch.float64).round()
    a, loop = net.c.expand(6, -1), []
    for d in range(9):
        loop.append(torch.sigmoid(a) @ net.V[d] + net.b[d])
        a = a + x[:, d:d + 1] * net.W[:, d]
    loop = torch.stack(loop, 1)
    fast = net(x)[:, 0]
    torch.testing.assert_close(fast, loop, rtol=1e-12, atol=1e-12)
    weights = torch.randn(6, 9, dtype=torch.float64)
    grads = torch.autograd.grad((fast * weights).sum(), list(net.parameters()))
    expected = torch.autograd.grad((loop * weights).sum(), list(net.parameters()))
    for got, want in zip(grads, expected):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="block"):
        NADE(9, 5, block=0)


def test_made_log_prob_matches_a_naive_loop():
    """Each conditional recomputed on an input where the dimensions at or after it in
    the order are replaced by noise: the sum of their log-probs is the one-pass log p(x)."""
    torch.manual_seed(0)
    net = MaskedMADE(8, [16], n_masks=2, seed=1)
    net.use_mask(1)
    x = torch.rand(5, 8).round()
    naive = torch.zeros(5)
    for k, d in enumerate(net.order):
        hidden = torch.tensor(net.order[k:])
        noisy = x.clone()
        noisy[:, hidden] = torch.rand(5, len(hidden))
        p = torch.sigmoid(net(noisy)[:, 0, d])
        naive += torch.where(x[:, d] == 1, p, 1 - p).log()
    fast = common.build_model(net, value_shape=(8,), observed={"x": x}).log_joint()
    torch.testing.assert_close(fast, naive)


def test_made_ensemble_is_the_mean_of_the_masks_probabilities():
    torch.manual_seed(0)
    net = MaskedMADE(6, [12], n_masks=3, seed=2)
    x = torch.rand(4, 6).round()
    per_mask = []
    for k in range(3):
        net.use_mask(k)
        per_mask.append(Autoregressive(net, "bernoulli", [6]).log_prob(x).exp())
    expected = torch.stack(per_mask).mean(0).log()
    torch.testing.assert_close(ensemble_log_lik(net, x), expected)
    assert net.mask_index == 0


def test_nade_and_rnade_sampling_shortcut_matches_the_full_pass():
    torch.manual_seed(0)
    nade, rnade = NADE(7, 5), RNADE(4, 5, 3)
    x, y = torch.rand(3, 7).round(), torch.randn(3, 4)
    torch.testing.assert_close(torch.stack([nade.conditional(x, d) for d in range(7)], 2),
                               nade(x))
    torch.testing.assert_close(torch.stack([rnade.conditional(y, d) for d in range(4)], 2),
                               rnade(y))
    dist = Autoregressive(rnade, GaussianMixtureFamily(3), [4])
    assert dist.sample(5).shape == (5, 4)
