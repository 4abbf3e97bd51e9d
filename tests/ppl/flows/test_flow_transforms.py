"""Every flow transform: exact inverse, log |det| = autograd's, shapes; flows as densities."""
import math

import pytest
import torch
from torch.autograd.functional import jacobian

import ppl
from ppl.distributions import FlowDistribution, Normal
from ppl.flows import (ActNorm, AdditiveCoupling, BatchNorm, ConvAffineCoupling, FactorOut,
                       InvertibleConv1x1, Inverse, Logit, MaskedAutoregressive, Permutation,
                       Reshape, Scaling, Squeeze, bits_per_dim, dequantize, iaf, maf)

F64 = torch.float64


def randomize(module, scale=0.3, seed=0):
    """Random parameters (zero-initialized output layers would make identities); BatchNorm's
    running statistics random too, and eval mode so it is a fixed map."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(scale * torch.randn(p.shape, generator=gen, dtype=p.dtype))
        for m in module.modules():
            if isinstance(m, BatchNorm):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=gen))
                m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=gen))
            if isinstance(m, ActNorm):
                m.initialized.fill_(True)
    return module.eval()


def inner_flow():
    return [ConvAffineCoupling((1, 2, 2), 4, mask="checkerboard"), ActNorm((1, 2, 2))]


# name -> (factory, input sampler for the forward direction)
def real(shape):
    return lambda gen: 1.5 * torch.randn(shape, generator=gen, dtype=F64)


def unit(shape):
    return lambda gen: 0.02 + 0.96 * torch.rand(shape, generator=gen, dtype=F64)


TRANSFORMS = {
    "additive-coupling": (lambda: AdditiveCoupling(4, [8, 8]), real((3, 4))),
    "additive-coupling-mask": (lambda: AdditiveCoupling(4, 8, mask=[1, 0, 0, 1]), real((3, 4))),
    "scaling": (lambda: Scaling(4), real((3, 4))),
    "permutation-random": (lambda: Permutation(4, "random"), real((3, 4))),
    "permutation-reverse": (lambda: Permutation(4), real((3, 4))),
    "maf-layer": (lambda: MaskedAutoregressive(4, 8, sampling="sequential"), real((3, 4))),
    "iaf-layer-clamped": (lambda: MaskedAutoregressive(4, 8, max_log_scale=1.), real((3, 4))),
    "checkerboard-0": (lambda: ConvAffineCoupling((2, 3, 3), 4), real((2, 2, 3, 3))),
    "checkerboard-1": (lambda: ConvAffineCoupling((2, 3, 3), 4, parity=1), real((2, 2, 3, 3))),
    "channel-0": (lambda: ConvAffineCoupling((3, 2, 2), 4, mask="channel"), real((2, 3, 2, 2))),
    "channel-1": (lambda: ConvAffineCoupling((2, 2, 3), 4, mask="channel", parity=1),
                  real((2, 2, 2, 3))),
    "squeeze": (lambda: Squeeze((2, 2, 4)), real((2, 2, 2, 4))),
    "unsqueeze": (lambda: Inverse(Squeeze((1, 2, 2))), real((2, 4, 1, 1))),
    "reshape": (lambda: Reshape(8, (2, 2, 2)), real((2, 8))),
    "factor-out": (lambda: FactorOut((3, 2, 2), inner_flow()), real((2, 12))),
    "actnorm-image": (lambda: ActNorm((3, 2, 2)), real((2, 3, 2, 2))),
    "actnorm-vector": (lambda: ActNorm(3), real((4, 3))),
    "conv1x1-lu": (lambda: InvertibleConv1x1((3, 2, 2)), real((2, 3, 2, 2))),
    "conv1x1-full": (lambda: InvertibleConv1x1((3, 2, 2), lu=False), real((2, 3, 2, 2))),
    "batchnorm-image": (lambda: BatchNorm((2, 2, 2)), real((2, 2, 2, 2))),
    "batchnorm-vector": (lambda: BatchNorm(3), real((4, 3))),
    "logit": (lambda: Logit((1, 2, 2), alpha=0.05), unit((2, 1, 2, 2))),
    "logit-alpha-0": (lambda: Logit(3, alpha=0.), unit((4, 3))),
    "sigmoid": (lambda: Inverse(Logit(3)), real((4, 3))),
}


def make(name, seed=0):
    factory, sampler = TRANSFORMS[name]
    torch.manual_seed(seed)
    with torch.random.fork_rng():
        torch.set_default_dtype(F64)
        try:
            t = factory()
        finally:
            torch.set_default_dtype(torch.float32)
    return randomize(t.double(), seed=seed), sampler(torch.Generator().manual_seed(seed + 1))


@pytest.mark.parametrize("name", TRANSFORMS)
def test_inverse_undoes_forward_in_float64(name):
    t, x = make(name)
    y, log_det = t(x)
    batch = x.shape[:x.dim() - len(t.event_shape)]
    assert y.shape == batch + t.out_shape and log_det.shape == batch
    back, log_det_back = t.inverse_and_log_det(y)
    torch.testing.assert_close(back, x, atol=1e-5, rtol=0)
    torch.testing.assert_close(t.inverse(y), x, atol=1e-5, rtol=0)
    torch.testing.assert_close(log_det_back, log_det, atol=1e-8, rtol=0)


@pytest.mark.parametrize("name", TRANSFORMS)
def test_log_det_is_log_abs_det_of_the_autograd_jacobian(name):
    t, x = make(name)
    event = tuple(t.event_shape)
    points = x.reshape((-1,) + event)[:2]
    _, log_det = t(points)
    for point, value in zip(points, log_det):
        jac = jacobian(lambda v: t(v.reshape(event))[0].reshape(-1), point.reshape(-1))
        torch.testing.assert_close(value, torch.linalg.slogdet(jac)[1], atol=1e-8, rtol=0)


def test_squeeze_moves_each_2x2_patch_into_channels():
    x = torch.arange(16.).reshape(1, 4, 4)
    y, _ = Squeeze((1, 4, 4))(x)
    assert y.shape == (4, 2, 2)
    torch.testing.assert_close(y[:, 0, 0], torch.tensor([0., 1., 4., 5.]))
    torch.testing.assert_close(y[0], x[0, ::2, ::2])


def test_coupling_masks_keep_their_half():
    x = torch.randn(2, 4, 4, 4, dtype=F64)
    board = randomize(ConvAffineCoupling((4, 4, 4), 4, parity=1).double())
    y = board(x)[0]
    kept = (torch.arange(4)[:, None] + torch.arange(4)) % 2 == 1
    torch.testing.assert_close(y[..., kept], x[..., kept])
    assert not torch.allclose(y[..., ~kept], x[..., ~kept])
    channel = randomize(ConvAffineCoupling((4, 4, 4), 4, mask="channel").double())
    y = channel(x)[0]
    torch.testing.assert_close(y[:, :2], x[:, :2])
    assert not torch.allclose(y[:, 2:], x[:, 2:])


# -- flows as densities ---------------------------------------------------------
def two_d_flow(seed=0):
    """A 2-D flow using every kind of layer (image ones on 2-pixel images)."""
    torch.manual_seed(seed)
    layers = [Reshape(2, (2, 1, 1)), ActNorm((2, 1, 1)), InvertibleConv1x1((2, 1, 1)),
              ConvAffineCoupling((2, 1, 1), 4, mask="channel"), Reshape((2, 1, 1), (1, 1, 2)),
              ConvAffineCoupling((1, 1, 2), 4, parity=1), Reshape((1, 1, 2), 2),
              AdditiveCoupling(2, 8), Scaling(2), BatchNorm(2), *maf(2, 2, 8), *iaf(2, 1, 8),
              Permutation(2)]
    layers = [randomize(t.double(), scale=0.4, seed=seed + i) for i, t in enumerate(layers)]
    return FlowDistribution(Normal(torch.zeros(2, dtype=F64), std=1.), layers)


def grid(half_width=9., n=450):
    """The midpoints of an n x n grid of cells on [-half_width, half_width]^2 and a cell's area."""
    width = 2 * half_width / n
    axis = -half_width + width * (torch.arange(n, dtype=F64) + 0.5)
    points = torch.stack(torch.meshgrid(axis, axis, indexing="ij"), dim=-1)
    return axis, points, width ** 2


def test_a_2d_flow_density_integrates_to_one():
    """Grid mass on [-9, 9]^2 plus the sampled mass outside it is 1 (within 2e-3: the
    outside fraction's SE is ~1e-4 here, the grid's error smaller)."""
    flow = two_d_flow(seed=7)
    torch.manual_seed(0)
    with torch.no_grad():
        samples = flow.sample(20000)
        outside = (samples.abs() > 9).any(-1).double().mean()
        _, points, cell = grid()
        mass = flow.log_prob(points).exp().sum() * cell
    assert 0 < outside < 2e-3
    assert abs(mass.item() + outside.item() - 1) < 2e-3


def test_samples_follow_the_density():
    """Fractions of samples in coarse cells vs the density's mass there, within 5 SE."""
    flow = two_d_flow(seed=6)
    n = 40000
    torch.manual_seed(1)
    with torch.no_grad():
        samples = flow.sample(n)
        axis, points, cell = grid()
        density = flow.log_prob(points).exp() * cell
    assert (samples.abs() > 9).any(-1).double().mean() < 1e-3
    edges = torch.tensor([-9., 1., 1.6, 2.2, 9.], dtype=F64)
    fine = torch.bucketize(axis, edges).clamp(1, 4) - 1
    coarse = torch.bucketize(samples, edges).clamp(1, 4) - 1
    for i in range(4):
        for j in range(4):
            p = density[fine == i][:, fine == j].sum()
            frac = ((coarse[:, 0] == i) & (coarse[:, 1] == j)).double().mean()
            se = math.sqrt(max(p.item() * (1 - p.item()), 1e-6) / n)
            assert abs(frac - p) < 5 * se + 2e-4, (i, j, frac.item(), p.item())


def test_cached_density_of_samples_equals_density_by_inversion():
    flow = two_d_flow(seed=5)
    y = flow.sample(7)
    cached = flow.log_prob(y)
    torch.testing.assert_close(cached, flow.log_prob(y.clone()), atol=1e-8, rtol=0)


def realnvp_like(event=(1, 4, 4)):
    """Multi-scale: checkerboard couplings, squeeze, channel couplings, factor out half."""
    c, h, w = event
    squeezed = (4 * c, h // 2, w // 2)
    half = (2 * c, h // 2, w // 2)
    inner = [ConvAffineCoupling(half, 4), ConvAffineCoupling(half, 4, parity=1)]
    return [FactorOut(squeezed, [Reshape(half[0] * half[1] * half[2], half), *inner]),
            ConvAffineCoupling(squeezed, 4, mask="channel"), ActNorm(squeezed),
            InvertibleConv1x1(squeezed), Inverse(Squeeze(event)),
            ConvAffineCoupling(event, 4), ConvAffineCoupling(event, 4, parity=1),
            Inverse(Logit(event, alpha=0.05))]


def test_image_flow_is_a_node_of_a_bayesian_net():
    torch.manual_seed(0)
    layers = [randomize(t.double(), seed=i) for i, t in enumerate(realnvp_like())]
    images = dequantize(torch.randint(0, 256, (5, 1, 4, 4)), dtype=F64)
    bn = ppl.BayesianNet(observed={"x": images})
    flow = FlowDistribution(Normal(torch.zeros(16, dtype=F64), std=1., group_ndims=1), layers)
    x = bn.stochastic("x", flow)
    assert flow.value_shape == (1, 4, 4) and flow.batch_shape == ()
    log_p = bn.cond_log_prob("x")
    assert log_p.shape == (5,) and torch.isfinite(log_p).all()
    # the change of variables, written out through the inverses
    z, total = images, torch.zeros(5, dtype=F64)
    for t in reversed(layers):
        z, log_det = t.inverse_and_log_det(z)
        total = total + log_det
    expected = Normal(torch.zeros(16, dtype=F64), std=1.).log_prob(z).sum(-1) - total
    torch.testing.assert_close(log_p, expected)
    samples = flow.sample(3)
    bound = 0.05 / 0.9                         # sigmoid's range, rescaled by Logit's alpha
    assert samples.shape == (3, 1, 4, 4) and (samples.abs() - 0.5 < 0.5 + bound).all()
    assert x.tensor is images


def test_actnorm_init_gives_zero_mean_unit_variance_per_channel():
    torch.manual_seed(0)
    data = torch.randn(64, 3, 4, 4, dtype=F64) * torch.tensor([0.5, 2., 7.])[:, None, None] \
        + torch.tensor([-3., 0.5, 10.])[:, None, None]
    conv = randomize(InvertibleConv1x1((3, 4, 4)).double())
    actnorm = ActNorm((3, 4, 4)).double()
    flow = FlowDistribution(Normal(torch.zeros(3, 4, 4, dtype=F64), std=1.), [actnorm, conv])
    assert not actnorm.initialized
    flow.log_prob(data)                        # the first data scored initializes
    assert actnorm.initialized
    latent = actnorm.inverse(conv.inverse(data))
    torch.testing.assert_close(latent.mean(dim=(0, 2, 3)), torch.zeros(3, dtype=F64),
                               atol=1e-10, rtol=0)
    torch.testing.assert_close(latent.var(dim=(0, 2, 3), correction=0),
                               torch.ones(3, dtype=F64), atol=1e-5, rtol=0)
    before = actnorm.bias.clone()
    flow.log_prob(data + 1)                    # later batches do not re-initialize
    torch.testing.assert_close(actnorm.bias, before)


def test_batchnorm_uses_batch_statistics_in_training_and_running_ones_in_eval():
    bn = BatchNorm(2).double()
    data = torch.randn(500, 2, dtype=F64) * 3 + 1
    x, log_det = bn.inverse_and_log_det(data)
    torch.testing.assert_close(x.mean(0), torch.zeros(2, dtype=F64), atol=1e-10, rtol=0)
    expected = 0.5 * torch.log(data.var(0, correction=0) + bn.eps).sum()
    torch.testing.assert_close(log_det, expected.expand(500))
    torch.testing.assert_close(bn.running_mean, 0.1 * data.mean(0))
    bn.eval()
    torch.testing.assert_close(bn(bn.inverse(data))[0], data)


def test_maf_and_iaf_stacks_have_permutations_and_the_right_directions():
    stack = maf(3, 3, 8, batch_norm=True)
    kinds = [type(t).__name__ for t in stack]
    assert kinds == ["MaskedAutoregressive", "BatchNorm", "Permutation", "MaskedAutoregressive",
                     "BatchNorm", "Permutation", "MaskedAutoregressive", "BatchNorm"]
    assert all(t.sampling == "sequential" for t in stack if isinstance(t, MaskedAutoregressive))
    assert all(t.sampling == "parallel" for t in iaf(3, 2, 8)
               if isinstance(t, MaskedAutoregressive))


def test_dequantize_and_bits_per_dim():
    images = torch.tensor([[0, 255], [17, 3]], dtype=torch.uint8)
    u = dequantize(images, generator=torch.Generator().manual_seed(0))
    assert ((u >= images / 256) & (u < (images.float() + 1) / 256)).all()
    # the uniform density on the cube is 8 bits per dim of 256-level pixels
    assert bits_per_dim(torch.tensor(0.), 784).item() == pytest.approx(8.)


# -- bad input -------------------------------------------------------------------
def test_bad_configurations_are_reported_naming_the_argument():
    with pytest.raises(ValueError, match=r"Squeeze: `event_shape` must have an even height and "
                                         r"width.*\(1, 7, 7\)"):
        Squeeze((1, 7, 7))
    with pytest.raises(ValueError, match=r"Squeeze: `event_shape` must be an image shape"):
        Squeeze((28, 28))
    with pytest.raises(ValueError, match=r"InvertibleConv1x1: `weight` must be an invertible "
                                         r"\[2, 2\] matrix.*rank 1"):
        InvertibleConv1x1((2, 3, 3), weight=[[1., 2.], [2., 4.]])
    with pytest.raises(ValueError, match="ConvAffineCoupling: a channel mask needs at least 2"):
        ConvAffineCoupling((1, 4, 4), 8, mask="channel")
    with pytest.raises(ValueError, match="ConvAffineCoupling: `mask` must be 'checkerboard'"):
        ConvAffineCoupling((2, 4, 4), 8, mask="stripes")
    with pytest.raises(ValueError, match=r"AdditiveCoupling: `mask` must be a 0/1 tensor"):
        AdditiveCoupling(3, 8, mask=[1, 1, 1])
    with pytest.raises(ValueError, match=r"Logit: `alpha` must be a number in \[0, 0.5\)"):
        Logit(4, alpha=0.5)
    with pytest.raises(ValueError, match=r"Permutation: `permutation` must be a permutation"):
        Permutation(3, [0, 0, 1])
    with pytest.raises(ValueError, match=r"BatchNorm: `eps` must be positive"):
        BatchNorm(3, eps=0.)
    with pytest.raises(ValueError, match=r"FactorOut: `transforms` must end at shape "
                                         r"\(2, 2, 2\)"):
        FactorOut((4, 2, 2), [ActNorm((4, 2, 2))])
    with pytest.raises(ValueError, match=r"transforms\[1\] \(ActNorm\) reads values of shape "
                                         r"\(4, 2, 2\), but transforms\[0\] \(Squeeze\) writes "
                                         r"\(4, 1, 1\)"):
        FlowDistribution(Normal(torch.zeros(1, 2, 2), std=1.),
                         [Squeeze((1, 2, 2)), ActNorm((4, 2, 2))])
    with pytest.raises(ValueError, match=r"reads values of shape \(1, 2, 2\), but the base's "
                                         r"last batch axes \(3, 2, 2\) differ"):
        FlowDistribution(Normal(torch.zeros(3, 2, 2), std=1.), [Squeeze((1, 2, 2))])


def test_bad_values_are_reported_naming_the_argument():
    with pytest.raises(ValueError, match=r"Logit: `x` must lie in \[0, 1\].*\[-0.5, 1.2\]"):
        Logit(2)(torch.tensor([-0.5, 1.2]))
    with pytest.raises(ValueError, match=r"Logit: `x` must lie in \(0, 1\) \(alpha=0\)"):
        Logit(2, alpha=0.)(torch.tensor([0., 0.5]))
    flow = FlowDistribution(Normal(torch.zeros(2), std=1.), [Inverse(Logit(2))])
    with pytest.raises(ValueError, match=r"Logit: `x` must lie in \[0, 1\]"):
        flow.log_prob(torch.tensor([0.5, 3.]))
    with pytest.raises(ValueError, match=r"Squeeze: `x` must have shape \(...\) \+ \[1, 4, 4\]"):
        Squeeze((1, 4, 4))(torch.zeros(1, 4, 3))
    with pytest.raises(ValueError, match=r"dequantize: `images` must hold integers in 0..255"):
        dequantize(torch.rand(3))
