"""ZhuSuan's examples/semi_supervised_vae/vae_ssl.py: the M2 model with 100 labels, ported.

Kingma et al.'s M2 on MNIST: 10 labeled digits per class (ZhuSuan's selection,
seed 123456), every training digit unlabeled, binarized at random. The
labeled ELBO, the unlabeled one summed over q(y | x), and the classifier's
beta-weighted log-likelihood are trained together by Adam. ZhuSuan trains
3000 epochs of 600 batches with 10 particles; this short run takes 100
batches with one particle (the unlabeled bound runs the decoder on
batch x 10 classes x particles rows), and checks the classifier's accuracy on
the first 1000 test digits: measured 0.739, 0.745, 0.748 over three seeds,
checked > 0.65. After so few batches this is mostly the classifier trained on
the 100 labels, not M2's semi-supervised gain (README.md).
"""
import numpy as np
import torch
from torch import nn

import inference
import ppl
from models.data import load_mnist


def dense(name, n_in, n_out):
    return ppl.module(name, lambda: nn.Linear(n_in, n_out))


@ppl.meta_bayesian_net(scope="gen", reuse_variables=True)
def build_gen(n, x_dim, n_class, z_dim, n_particles):
    bn = ppl.BayesianNet()
    z_mean = torch.zeros([n, z_dim])
    z = bn.normal("z", z_mean, std=1., group_ndims=1, n_samples=n_particles)
    h_from_z = dense("h_from_z", z_dim, 500)(z)
    y_logits = torch.zeros([n, n_class])
    y = bn.onehot_categorical("y", y_logits)
    h_from_y = dense("h_from_y", n_class, 500)(y.float())
    h = torch.relu(h_from_z + h_from_y)
    h = torch.relu(dense("h", 500, 500)(h))
    x_logits = dense("x_logits", 500, x_dim)(h)
    bn.bernoulli("x", x_logits, group_ndims=1)
    return bn


@ppl.reuse_variables(scope="variational")
def qz_xy(x, y, z_dim, n_particles):
    bn = ppl.BayesianNet()
    xy = torch.cat([x, y], -1).float()
    h = torch.relu(dense("h1", xy.shape[-1], 500)(xy))
    h = torch.relu(dense("h2", 500, 500)(h))
    z_mean = dense("z_mean", 500, z_dim)(h)
    z_logstd = dense("z_logstd", 500, z_dim)(h)
    bn.normal("z", z_mean, logstd=z_logstd, group_ndims=1,
              n_samples=n_particles)
    return bn


@ppl.reuse_variables("classifier")
def qy_x(x, n_class):
    h = torch.relu(dense("h1", x.shape[-1], 500)(x.float()))
    h = torch.relu(dense("h2", 500, 500)(h))
    y_logits = dense("y_logits", 500, n_class)(h)
    return y_logits


def load_mnist_semi_supervised(seed=123456):
    """10 labeled digits per class (ZhuSuan's choice); all 60000 training digits unlabeled."""
    rng = np.random.RandomState(seed=seed)
    mnist = load_mnist()
    x_train = mnist.train_images.reshape(-1, 784).astype('float32') / 255.
    t_train = mnist.train_labels.astype(np.int64)
    x_labeled, t_labeled = [], []
    for i in range(10):
        indices = np.nonzero(t_train == i)[0]
        rng.shuffle(indices)
        x_labeled.append(x_train[indices[:10]])
        t_labeled.append(t_train[indices[:10]])
    x_unlabeled = x_train.copy()
    np.random.shuffle(x_unlabeled)
    x_test = mnist.test_images.reshape(-1, 784).astype('float32') / 255.
    eye = np.eye(10, dtype=np.int32)
    return (np.vstack(x_labeled), eye[np.hstack(t_labeled)], x_unlabeled, x_test,
            eye[mnist.test_labels])


def run(n_iters=100, lb_samples=1, n_test=1000, seed=1234):
    """ZhuSuan's main() cut short: (mean train accuracy of the last 50 batches, test accuracy)."""
    torch.manual_seed(seed)
    np.random.seed(seed)

    x_labeled, t_labeled, x_unlabeled, x_test, t_test = load_mnist_semi_supervised()
    x_test = np.random.binomial(1, x_test[:n_test], size=x_test[:n_test].shape)
    x_labeled, t_labeled, x_unlabeled, x_test, t_test = map(
        torch.as_tensor, (x_labeled, t_labeled, x_unlabeled, x_test, t_test[:n_test]))
    n_labeled, x_dim = x_labeled.shape
    n_class = 10

    # Define model parameters
    z_dim = 100

    # Define training/evaluation parameters
    beta = 1200.
    batch_size = 100

    def bounds(x_labeled_ph, y_labeled_ph, x_unlabeled_ph, n_particles):
        n = x_unlabeled_ph.shape[0]
        # Labeled
        x_labeled = (torch.rand_like(x_labeled_ph) < x_labeled_ph).to(torch.int32)
        model = build_gen(x_labeled.shape[0], x_dim, n_class, z_dim, n_particles)
        variational = qz_xy(x_labeled, y_labeled_ph, z_dim, n_particles)
        labeled_lower_bound = torch.mean(
            inference.elbo(model, observed={"x": x_labeled, "y": y_labeled_ph},
                           variational=variational, axis=0))

        # Unlabeled
        x_unlabeled = (torch.rand_like(x_unlabeled_ph) < x_unlabeled_ph).to(torch.int32)
        y_diag = torch.eye(n_class, dtype=torch.int32)
        y_u = y_diag[None, ...].expand(n, -1, -1).reshape(-1, n_class)
        x_u = x_unlabeled[:, None, ...].expand(-1, n_class, -1).reshape(-1, x_dim)
        model = build_gen(n * n_class, x_dim, n_class, z_dim, n_particles)
        variational = qz_xy(x_u, y_u, z_dim, n_particles)
        lb_z = inference.elbo(model, observed={"x": x_u, "y": y_u},
                              variational=variational, axis=0)
        # sum over y
        lb_z = torch.reshape(lb_z, [-1, n_class])
        qy_logits_u = qy_x(x_unlabeled_ph, n_class)
        qy_u = torch.softmax(qy_logits_u, -1) + 1e-8
        qy_u = qy_u / torch.sum(qy_u, 1, keepdim=True)
        log_qy_u = torch.log(qy_u)
        unlabeled_lower_bound = torch.mean(torch.sum(qy_u * (lb_z - log_qy_u), 1))

        # Build classifier
        qy_logits_l = qy_x(x_labeled, n_class)
        pred_y = torch.argmax(qy_logits_l, 1)
        acc = torch.mean((pred_y == torch.argmax(y_labeled_ph, 1)).float())
        onehot_cat = ppl.distributions.OnehotCategorical(qy_logits_l)
        log_qy_x = onehot_cat.log_prob(y_labeled_ph)
        classifier_cost = -beta * torch.mean(log_qy_x)
        return labeled_lower_bound, unlabeled_lower_bound, classifier_cost, acc

    # Calling the templates creates their layers, as ZhuSuan's graph does
    build_gen(batch_size, x_dim, n_class, z_dim, lb_samples)
    qz_xy(x_labeled, t_labeled, z_dim, lb_samples)
    qy_x(x_labeled, n_class)
    optimizer = torch.optim.Adam(
        [*build_gen.parameters(), *qz_xy.parameters(), *qy_x.parameters()], lr=3e-4)

    train_accs = []
    for t in range(n_iters):
        labeled_indices = np.random.randint(0, n_labeled, size=batch_size)
        x_unlabeled_batch = x_unlabeled[t * batch_size:(t + 1) * batch_size]
        labeled_lower_bound, unlabeled_lower_bound, classifier_cost, acc = bounds(
            x_labeled[labeled_indices], t_labeled[labeled_indices], x_unlabeled_batch,
            lb_samples)
        cost = -(labeled_lower_bound + unlabeled_lower_bound - classifier_cost) / 2.
        optimizer.zero_grad()
        cost.backward()
        optimizer.step()
        train_accs.append(acc.item())

    with torch.no_grad():
        test_pred = torch.argmax(qy_x(x_test, n_class), 1)
        test_acc = torch.mean((test_pred == torch.argmax(t_test, 1)).float()).item()
    return float(np.mean(train_accs[-50:])), test_acc


def test_m2_accuracy_after_a_short_run(require_dataset):
    require_dataset("mnist")
    train_acc, test_acc = run()
    assert test_acc > 0.65, (train_acc, test_acc)
