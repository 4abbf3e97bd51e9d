"""Small binary energy models, and their exact quantities by enumerating every state."""
import itertools

import torch

import ppl


def states(n, dtype=torch.float64):
    """Every binary vector of length n: [2^n, n]."""
    return torch.tensor(list(itertools.product([0., 1.], repeat=n)), dtype=dtype)


def random_rbm(n_visible=5, n_hidden=3, seed=1, scale=1.):
    """An RBM template with float64 parameters drawn from `seed`: p* = exp(b.v + c.h + v W h)."""
    g = torch.Generator().manual_seed(seed)
    W0 = scale * torch.randn(n_visible, n_hidden, generator=g, dtype=torch.float64)
    b0 = 0.5 * scale * torch.randn(n_visible, generator=g, dtype=torch.float64)
    c0 = 0.5 * scale * torch.randn(n_hidden, generator=g, dtype=torch.float64)

    @ppl.meta_bayesian_net(scope="rbm")
    def rbm():
        W, b, c = ppl.param("W", W0.clone), ppl.param("b", b0.clone), ppl.param("c", c0.clone)
        bn = ppl.BayesianNet()
        v = bn.bernoulli("v", logits=b, group_ndims=1)
        h = bn.bernoulli("h", logits=c, group_ndims=1)
        bn.factor("coupling", ((v @ W) * h).sum(-1))
        return bn

    model = ppl.EnergyModel(rbm(), {"v": n_visible, "h": n_hidden})
    list(rbm.parameters())  # runs the template once: rbm.params holds W, b, c
    return rbm, model


def random_dbm(sizes=(4, 3, 2), seed=2, scale=1.):
    """A two-hidden-layer DBM (fixed float64 weights): v - h1 - h2, no other couplings."""
    g = torch.Generator().manual_seed(seed)
    nv, n1, n2 = sizes
    W1 = scale * torch.randn(nv, n1, generator=g, dtype=torch.float64)
    W2 = scale * torch.randn(n1, n2, generator=g, dtype=torch.float64)
    biases = [0.5 * scale * torch.randn(n, generator=g, dtype=torch.float64) for n in sizes]

    def dbm():
        bn = ppl.BayesianNet()
        v = bn.bernoulli("v", logits=biases[0], group_ndims=1)
        h1 = bn.bernoulli("h1", logits=biases[1], group_ndims=1)
        h2 = bn.bernoulli("h2", logits=biases[2], group_ndims=1)
        bn.factor("v_h1", ((v @ W1) * h1).sum(-1))
        bn.factor("h1_h2", ((h1 @ W2) * h2).sum(-1))
        return bn

    return ppl.EnergyModel(dbm, {"v": nv, "h1": n1, "h2": n2})


def joint_table(model):
    """(every joint state as name -> [S, units], log p* [S]) of a small EnergyModel."""
    sizes = list(model.layers.values())
    every = states(sum(sizes))
    values = dict(zip(model.layers, torch.split(every, sizes, dim=-1)))
    with torch.no_grad():
        return values, model.log_joint(values)


def exact_log_z(model):
    return torch.logsumexp(joint_table(model)[1], 0).item()


def block_conditional_by_enumeration(model, name, values):
    """p(x_name = s | the other layers' values) for every state s of the layer: [2^n, batch]."""
    candidates = states(model.layers[name], dtype=values[name].dtype)
    batch = values[name].shape[0]
    expanded = {k: v.expand(len(candidates), *v.shape) for k, v in values.items()}
    expanded[name] = candidates[:, None, :].expand(-1, batch, -1)
    with torch.no_grad():
        return torch.softmax(model.log_joint(expanded).double(), 0)
