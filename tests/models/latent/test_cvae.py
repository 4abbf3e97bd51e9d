"""The label-conditioned VAE: labels checked where they enter, samples by class."""
import numpy as np
import pytest
import torch

from models import experiment
from models.latent import cvae

HIDDEN = (8,)


@pytest.mark.parametrize("labels, message", [
    (np.array([0, 3, 10, 1]), r"node 'y': labels must lie in \[0, 10\), found 10"),
    (np.array([0, -1, 2, 1]), r"node 'y': labels must lie in \[0, 10\), found -1"),
    (np.array([0., 1., 2., 3.]), r"node 'y': expected integer class labels of shape \[4\], "
                                 r"got float64 \(4,\)"),
    (np.array([0, 1, 2]), r"node 'y': expected integer class labels of shape \[4\], "
                          r"got int64 \(3,\)"),
])
def test_bad_labels_are_refused_where_they_enter(labels, message):
    with pytest.raises(ValueError, match=message):
        experiment.LabelledBatches(np.zeros((4, 6), np.float32), labels, batch_size=2)


def test_the_programs_refuse_labels_that_are_not_int64_of_the_batch_size():
    gen, q_net = cvae.new_templates()
    x = torch.zeros(4, 6)
    with pytest.raises(ValueError, match=r"node 'y': expected an int64 tensor of class labels "
                                         r"of shape \[4\] in \[0, 10\), got a torch.float32"):
        q_net(x, torch.zeros(4), 2, 1, hidden=HIDDEN)
    with pytest.raises(ValueError, match=r"node 'y'.*shape \[4\].*got a torch.int64 tensor "
                                         r"of shape \(3,\)"):
        q_net(x, torch.zeros(3, dtype=torch.int64), 2, 1, hidden=HIDDEN)
    with pytest.raises(ValueError, match="node 'x'"):
        q_net(torch.zeros(4, 6, dtype=torch.int64), torch.zeros(4, dtype=torch.int64), 2, 1,
              hidden=HIDDEN)


def test_batches_pair_images_with_their_labels():
    images = np.repeat(np.arange(6, dtype=np.float32)[:, None] / 10, 3, axis=1)
    batches = experiment.LabelledBatches(images, np.arange(6), batch_size=2, binarize=False)
    seen = []
    for x, y in batches(0):
        assert x.shape == (2, 3) and y.dtype == torch.int64
        torch.testing.assert_close(x[:, 0], y.float() / 10)
        seen += y.tolist()
    assert sorted(seen) == list(range(6))


def test_the_class_grid_conditions_on_the_label():
    gen, q_net = cvae.new_templates()
    x, y = torch.bernoulli(torch.full((10, 6), 0.5)), torch.arange(10)
    cvae.elbo_step(gen, q_net, 2, hidden=HIDDEN)((x, y))  # create the layers
    grid = cvae.class_samples(gen, 6, 2, n=20, hidden=HIDDEN)
    assert grid.shape == (20, 6)
    z = torch.zeros(1, 10, 2)  # one code for every class: the pictures differ by label only
    means = gen(6, 2, y, 1, hidden=HIDDEN).observe(z=z)["x_mean"][0]
    assert torch.cdist(means, means).triu(1)[torch.ones(10, 10).triu(1).bool()].min() > 0
