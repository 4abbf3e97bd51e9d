"""The model graph: traced edges, parents/children, Markov blankets, drawing."""
import copy
import io
import math
import pickle

import matplotlib.image
import matplotlib.pyplot
import networkx as nx
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import inference
import ppl
from ppl import graph as graph_lib


@ppl.meta_bayesian_net(scope="hierarchical")
def hierarchical(group, n_groups):
    """mu, tau -> theta_j -> y_mean (deterministic) -> y_ij <- sigma."""
    bn = ppl.BayesianNet()
    mu = bn.normal("mu", 0., std=5.)
    tau = bn.half_normal("tau", 2.)
    sigma = bn.half_normal("sigma", 1.)
    theta = bn.normal("theta", mu * torch.ones(n_groups), std=tau, group_ndims=1)
    y_mean = bn.deterministic("y_mean", theta[..., group])
    bn.normal("y", y_mean, std=sigma, group_ndims=1)
    return bn


GROUP = torch.tensor([0, 0, 1, 2, 2, 2, 3])


@pytest.fixture
def hier_bn():
    return hierarchical(GROUP, 4).observe(y=torch.randn(7))


def test_template_graph_has_exactly_the_model_edges(hier_bn):
    g = hier_bn.graph
    assert set(g.nodes) == {"mu", "tau", "sigma", "theta", "y_mean", "y"}
    assert set(g.edges) == {("mu", "theta"), ("tau", "theta"), ("theta", "y_mean"),
                            ("y_mean", "y"), ("sigma", "y")}
    assert g.nodes["theta"] == {"kind": "stochastic", "dist": "Normal", "observed": False}
    assert g.nodes["tau"]["dist"] == "HalfNormal"
    assert g.nodes["y"] == {"kind": "stochastic", "dist": "Normal", "observed": True}
    assert g.nodes["y_mean"]["kind"] == "deterministic"


def test_graph_of_an_unobserved_call_marks_nothing_observed():
    g = hierarchical(GROUP, 4).observe().graph
    assert not any(observed for _, observed in g.nodes(data="observed"))
    assert len(g.edges) == 5


@pytest.mark.parametrize("name, parents, children, blanket", [
    ("mu", set(), {"theta"}, {"theta", "tau"}),
    ("tau", set(), {"theta"}, {"theta", "mu"}),
    ("sigma", set(), {"y"}, {"y", "theta"}),
    ("theta", {"mu", "tau"}, {"y"}, {"mu", "tau", "y", "sigma"}),
    ("y_mean", {"theta"}, {"y"}, {"theta", "y", "sigma"}),
    ("y", {"theta", "sigma"}, set(), {"theta", "sigma"}),
])
def test_parents_children_and_markov_blanket(hier_bn, name, parents, children, blanket):
    assert hier_bn.parents(name) == parents
    assert hier_bn.children(name) == children
    assert hier_bn.markov_blanket(name) == blanket
    g = hier_bn.graph
    assert graph_lib.markov_blanket(g, name) == blanket


def test_hand_built_net_inside_track_graph():
    weight = torch.randn(3, 2)
    with ppl.track_graph():
        bn = ppl.BayesianNet(observed={"x": torch.zeros(4, 3)})
        a = bn.normal("a", torch.zeros(4, 2), std=1.)
        b = bn.normal("b", torch.zeros(4, 2), std=1.)
        c = bn.normal("c", 0., std=1.)  # touches nothing but the factor
        h = bn.deterministic("h", torch.tanh(F.linear(a, weight)))
        bn.normal("x", h + torch.stack([b, b], 0).mean(0)[:, :1], std=0.5)
        bn.factor("tie", -((a - b) ** 2).sum() - c ** 2)
    g = bn.graph
    assert set(g.edges) == {("a", "h"), ("h", "x"), ("b", "x"),
                            ("a", "tie"), ("b", "tie"), ("c", "tie")}
    assert g.nodes["tie"]["kind"] == "factor"
    assert bn.parents("x") == {"a", "b"}
    assert bn.children("a") == {"x", "tie"}
    # a factor ties its nodes together like an observed child
    assert bn.markov_blanket("a") == {"b", "c", "x"}
    assert bn.markov_blanket("c") == {"a", "b"}
    assert graph_lib.active_tracker() is None


def test_hand_built_net_in_a_with_block_records_its_graph():
    """ZhuSuan 0.3's `with BayesianNet() as model:` form: the block itself changes nothing."""
    with ppl.BayesianNet(observed={"y": torch.zeros(3)}) as bn:
        mu = bn.normal("mu", 0., std=1.)
        scale = bn.half_normal("scale", 1.)
        bn.normal("y", torch.ones(3) * mu, std=scale.exp(), group_ndims=1)
    assert set(bn.graph.edges) == {("mu", "y"), ("scale", "y")}
    assert bn.markov_blanket("mu") == {"y", "scale"}
    assert graph_lib.active_tracker() is None
    with ppl.track_graph() as outer, ppl.BayesianNet() as inner:  # an enclosing tracker
        assert graph_lib.active_tracker() is outer
        inner.normal("a", 0., std=1.)
    assert set(inner.graph.nodes) == {"a"}


def test_unknown_names_in_graph_queries_list_the_nodes(hier_bn):
    for query in (hier_bn.markov_blanket, hier_bn.parents, hier_bn.children):
        with pytest.raises(KeyError, match=r"no node named 'nope'.*nodes: mu, tau, sigma"):
            query("nope")


def test_constants_and_parameters_add_no_edges():
    layer = torch.nn.Linear(2, 2)
    with ppl.track_graph():
        bn = ppl.BayesianNet()
        u = bn.normal("u", layer(torch.ones(2)), std=1.)
        v = bn.normal("v", torch.zeros(2) + 1., std=torch.ones(2).exp())
        bn.normal("w", u + v, std=1.)
    assert set(bn.graph.edges) == {("u", "w"), ("v", "w")}
    assert bn.parents("u") == set() and bn.parents("v") == set()


def test_graph_of_a_module_model_through_as_meta_bn():
    class Regression(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = torch.nn.Linear(3, 1)

        def forward(self, x):
            bn = ppl.BayesianNet()
            scale = bn.log_normal("scale", 0., std=1.)
            bn.normal("y", self.net(x).squeeze(-1), std=scale)
            return bn

    bn = ppl.as_meta_bn(Regression(), torch.randn(5, 3)).observe(y=torch.zeros(5))
    assert set(bn.graph.edges) == {("scale", "y")}
    assert bn.graph.nodes["y"]["observed"]


def test_draw_graph_writes_a_png(hier_bn, tmp_path):
    path = tmp_path / "graph.png"
    open_figures = matplotlib.pyplot.get_fignums()
    fig = hier_bn.draw_graph(path=path)
    assert matplotlib.pyplot.get_fignums() == open_figures  # saving leaves pyplot alone
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    image = matplotlib.image.imread(path)
    assert image.shape[0] > 100 and image.shape[1] > 100
    assert (image[..., :3] < 0.5).any()  # something dark was drawn on the white page
    labels = [t.get_text().split("\n") for t in fig.axes[0].texts]
    assert sorted(label[0] for label in labels) == sorted(hier_bn.graph.nodes)
    assert ["tau", "HalfNormal"] in labels


def _clearance(graph):
    """The smallest distance, in node radii as drawn, from a drawn edge to a node that is
    not one of its ends."""
    fig = graph_lib.draw(graph)
    ax = fig.axes[0]
    fig.canvas.draw()
    pos, paths = graph_lib.layout(graph)
    radius = math.sqrt(graph_lib._NODE_SIZE) / 2 * fig.dpi / 72  # points -> pixels
    worst = math.inf
    for (u, v), route in paths.items():
        points = ax.transData.transform(np.array(route))
        for node in graph:
            if node in (u, v):
                continue
            c = ax.transData.transform(np.array([pos[node]]))[0]
            for a, b in zip(points, points[1:]):
                t = np.clip(np.dot(c - a, b - a) / np.dot(b - a, b - a), 0., 1.)
                worst = min(worst, np.linalg.norm(c - (a + t * (b - a))) / radius)
    matplotlib.pyplot.close(fig)
    return worst


def test_drawn_edges_pass_through_no_node(hier_bn):
    """Tutorial 01's model (its `sigma -> y` edge was drawn through `theta`), a chain with
    edges skipping layers, and a wider graph: every edge keeps a node radius off the nodes
    it does not join."""
    chain = nx.DiGraph([("a", "b"), ("b", "c"), ("c", "d"), ("a", "c"), ("a", "d")])
    wide = nx.DiGraph([("a", "b"), ("b", "c"), ("c", "d"), ("a", "d"), ("e", "d"), ("e", "b"),
                       ("f", "c"), ("b", "g"), ("g", "d")])
    for graph in (chain, wide):
        for node in graph:
            graph.nodes[node].update(kind="stochastic", dist="Normal", observed=False)
    for graph in (hier_bn.graph, chain, wide):
        assert _clearance(graph) > 1.


def test_draw_graph_into_given_axes_labels_factors():
    with ppl.track_graph():
        bn = ppl.BayesianNet()
        a = bn.normal("a", 0., std=1.)
        bn.factor("prior", -a ** 2)
    fig, ax = matplotlib.pyplot.subplots()
    assert bn.draw_graph(ax=ax) is fig
    assert sorted(t.get_text() for t in ax.texts) == ["a\nNormal", "prior"]
    matplotlib.pyplot.close(fig)


# -- a net built by hand, outside any template or track_graph() -----------------------

def test_hand_built_net_knows_its_graph():
    """#20 item 9: no template, no `with` block, no `track_graph()`."""
    bn = ppl.BayesianNet()
    theta = bn.normal("theta", 0., std=1.)
    bn.normal("y", theta * 2, std=1.)
    assert set(bn.graph.edges) == {("theta", "y")}
    assert bn.markov_blanket("theta") == {"y"}
    assert bn.parents("y") == {"theta"} and bn.children("theta") == {"y"}
    assert graph_lib.active_tracker() is None


LAYER = torch.nn.Linear(2, 3)
GROUPS = torch.tensor([0, 0, 1, 2, 2])


def _hierarchy(bn):
    """Indexing, arithmetic and a deterministic node."""
    mu = bn.normal("mu", 0., std=5.)
    tau = bn.half_normal("tau", 2.)
    sigma = bn.half_normal("sigma", 1.)
    theta = bn.normal("theta", mu * torch.ones(3), std=tau, group_ndims=1)
    y_mean = bn.deterministic("y_mean", theta[..., GROUPS])
    bn.normal("y", y_mean, std=sigma, group_ndims=1)


def _module_between(bn):
    """An nn.Module, torch functions, tuple outputs, a factor and an observed node."""
    a = bn.normal("a", torch.zeros(4, 2), std=1., group_ndims=1)
    b = bn.normal("b", torch.zeros(4, 3), std=1., group_ndims=1)
    c = bn.normal("c", 0., std=1.)
    h = bn.deterministic("h", torch.tanh(LAYER(a)))
    first, _ = torch.split(b, [1, 2], dim=-1)
    top = torch.stack([b, b], 0).max(0).values[:, :1]
    bn.normal("x", h + first + top + F.softplus(torch.cat([a, a], -1)[:, :3]), std=0.5,
              group_ndims=1)
    bn.factor("tie", -((a - b[:, :2]) ** 2).sum() - c ** 2)


def _in_place_and_raw_nodes(bn):
    """In-place writes into plain tensors, detach, dtype moves, node attributes, iteration,
    a raw node as an argument, a distribution built by the user, and `bn[name]`."""
    u = bn.normal("u", torch.zeros(3), std=1., group_ndims=1)
    v = bn.half_normal("v", 1.)
    scale = torch.ones(3)
    scale.mul_(v.exp())
    shifted = torch.zeros(3)
    shifted[1] = u[0]
    bn.normal("w", shifted, std=scale, group_ndims=1)
    bn.normal("q", u, std=v)
    total = sum(list(u.detach().double())).float()
    bn.stochastic("r", ppl.distributions.Normal(torch.where(u > 0, u, total), std=1.))
    bn.deterministic("d", u.abs() + 1)
    bn.normal("s", bn["d"].log(), std=bn["v"])


def _discrete(bn):
    """A categorical node indexing a vector node; Bernoulli logits from a node."""
    means = bn.normal("means", torch.tensor([-2., 0., 2.]), std=1., group_ndims=1)
    k = bn.categorical("k", logits=torch.zeros(3))
    bn.normal("obs", means[k], std=0.3)
    bn.bernoulli("flip", logits=means.sum(-1, keepdim=True) * 0.)


def _hand_built(program, observed):
    bn = ppl.BayesianNet(observed=observed)
    program(bn)
    return bn


def _by_template(program, observed):
    def fn():
        bn = ppl.BayesianNet()
        program(bn)
        return bn

    return ppl.meta_bayesian_net(scope=program.__name__)(fn)().observe(**observed)


@pytest.mark.parametrize("program, observed", [
    (_hierarchy, {"y": torch.randn(5)}),
    (_module_between, {"x": torch.randn(4, 3)}),
    (_in_place_and_raw_nodes, {"w": torch.randn(3)}),
    (_discrete, {"obs": torch.tensor(1.9), "k": torch.tensor(2)}),
])
def test_hand_built_graph_equals_the_template_graph(program, observed):
    torch.manual_seed(0)
    by_hand = _hand_built(program, observed).graph
    by_template = _by_template(program, observed).graph
    assert by_hand.edges, program.__name__
    assert dict(by_hand.nodes(data=True)) == dict(by_template.nodes(data=True))
    assert set(by_hand.edges) == set(by_template.edges)
    with ppl.track_graph():
        in_block = _hand_built(program, observed)
    assert set(in_block.graph.edges) == set(by_hand.edges)


def test_hand_built_graph_edges_of_each_program():
    """The equality above against the edges the programs were written to have."""
    assert set(_hand_built(_in_place_and_raw_nodes, {}).graph.edges) == {
        ("u", "w"), ("v", "w"), ("u", "q"), ("v", "q"), ("u", "r"), ("u", "d"), ("d", "s"),
        ("v", "s")}
    assert set(_hand_built(_discrete, {}).graph.edges) == {
        ("means", "obs"), ("k", "obs"), ("means", "flip")}


def test_hand_built_net_stores_plain_tensors():
    """What the net keeps, and inference reads, is plain; model code's values carry names
    but print, format, pickle and save as tensors, and gradients flow through them."""
    loc = torch.zeros(2, requires_grad=True)
    bn = ppl.BayesianNet(observed={"x": torch.ones(2)})
    z = bn.normal("z", loc, std=1., group_ndims=1)
    h = bn.deterministic("h", z * 2)
    bn.normal("x", h, std=1., group_ndims=1)
    bn.factor("f", -(z ** 2).sum())
    for value in (z.tensor, bn.cond_log_prob("x"), bn.log_joint(), bn.outputs("h"),
                  bn.outputs(["h"])[0], bn.factors["f"], bn.query("z", outputs=True)[0]):
        assert type(value) is torch.Tensor
    assert isinstance(h, graph_lib.Traced) and isinstance(z + 1, graph_lib.Traced)
    total = h.detach().sum()
    assert repr(h).startswith("tensor(") and f"{total:.2f}" == f"{float(total):.2f}"
    saved = io.BytesIO()
    torch.save(h, saved)
    saved.seek(0)
    assert type(torch.load(saved, weights_only=True)) is torch.Tensor
    assert type(pickle.loads(pickle.dumps(h))) is torch.Tensor
    twin = copy.deepcopy(h.detach())
    torch.testing.assert_close(twin, h.detach())
    assert isinstance(twin, graph_lib.Traced)
    assert np.asarray(h.detach()).shape == (2,) and isinstance(h.sum().item(), float)
    bn.log_joint().backward()
    assert loc.grad is not None and torch.isfinite(loc.grad).all()


def test_values_carried_into_another_net_add_no_edge():
    first = ppl.BayesianNet()
    a = first.normal("a", 0., std=1.)
    doubled = a * 2
    second = ppl.BayesianNet()
    b = second.normal("b", doubled, std=1.)
    second.normal("a", b + doubled, std=1.)  # the same name as first's node
    assert set(second.graph.edges) == {("b", "a")}
    assert set(first.graph.edges) == set()


def test_template_and_guide_nets_record_nothing_while_running():
    """A template's call costs what it did: plain values, no tracker; the graph of a net
    made by a guide template (no MetaBayesianNet to observe again) re-runs its call."""
    @ppl.reuse_variables(scope="q")
    def guide(x):
        bn = ppl.BayesianNet()
        loc = ppl.module("loc", lambda: torch.nn.Linear(3, 2))(x)
        z = bn.normal("z", loc, std=1., group_ndims=1)
        bn.normal("w", z.sum(-1), std=1.)
        ppl.BayesianNet().normal("other", 0., std=1.)  # a second net in the same call
        return bn

    bn = guide(torch.randn(4, 3))
    assert bn._tracker is None and type(bn["z"] * 2) is torch.Tensor
    assert set(bn.graph.edges) == {("z", "w")}
    assert bn.markov_blanket("z") == {"w"}
    assert len(list(guide.parameters())) == 2
    hier = hierarchical(GROUP, 4).observe()
    assert hier._tracker is None and type(hier["theta"] * 2) is torch.Tensor


def test_inference_reads_a_hand_built_guide():
    """A guide built by hand, passed to `elbo` as `variational`: a plain objective."""
    @ppl.meta_bayesian_net(scope="gauss")
    def model():
        bn = ppl.BayesianNet()
        z = bn.normal("z", torch.zeros(2), std=1., group_ndims=1, n_samples=8)
        bn.normal("x", z, std=1., group_ndims=1)
        return bn

    loc = torch.zeros(2, requires_grad=True)
    q = ppl.BayesianNet()
    q.normal("z", loc * 1., std=1., group_ndims=1, n_samples=8)
    objective = inference.elbo(model(), {"x": torch.ones(2)}, variational=q).sgvb()
    assert type(objective) is torch.Tensor
    objective.mean().backward()
    assert loc.grad is not None


def test_hand_built_flow_node_scores_its_own_sample():
    """A flow recognises the sample it drew by identity (Planar has no inverse): the
    plain value the net keeps is that very tensor, though its base was built from a node."""
    from ppl.flows import Planar

    bn = ppl.BayesianNet()
    mu = bn.normal("mu", torch.zeros(2), std=1., group_ndims=1)
    z = bn.flow("z", ppl.distributions.Normal(2 * mu, std=torch.ones(2)), [Planar(2)],
                n_samples=4)
    bn.normal("x", z, std=1., group_ndims=1)
    assert type(z.tensor) is torch.Tensor
    torch.testing.assert_close(bn.cond_log_prob("z"), z.dist.log_prob(z.tensor))
    assert set(bn.graph.edges) == {("mu", "z"), ("z", "x")}
