"""`TracedStep` and `Trainer(trace=True)`: a replayed step is the eager step, exactly."""
import re
import warnings

import pytest
import torch
from torch import nn

import inference
import ppl

X_DIM, Z_DIM, N = 6, 2, 5


def _templates():
    offset = torch.linspace(-0.2, 0.2, X_DIM)  # a tensor the step closes over: a constant

    @ppl.meta_bayesian_net(scope="gen")
    def gen(n, n_particles=1):
        bn = ppl.BayesianNet()
        z = bn.normal("z", torch.zeros(n, Z_DIM), std=1., group_ndims=1, n_samples=n_particles)
        logits = ppl.module("out", lambda: nn.Linear(Z_DIM, X_DIM))(z) + offset
        bn.bernoulli("x", logits, group_ndims=1)
        return bn

    @ppl.reuse_variables(scope="q")
    def guide(x, n_particles=1, reparameterized=True):
        bn = ppl.BayesianNet()
        h = ppl.module("h", lambda: nn.Linear(X_DIM, 2 * Z_DIM))(x)
        bn.normal("z", h[..., :Z_DIM], logstd=h[..., Z_DIM:], group_ndims=1,
                  n_samples=n_particles, is_reparameterized=reparameterized)
        return bn

    return gen, guide


def _sgvb_step(gen, guide):
    def step(x):
        lower_bound = inference.elbo(gen(x.shape[0], 3), {"x": x}, variational=guide(x, 3),
                                     axis=0)
        return lower_bound.sgvb().mean(), lower_bound
    return step


def _reinforce_step(gen, guide):
    def step(x):
        lower_bound = inference.elbo(gen(x.shape[0], 3), {"x": x},
                                     variational=guide(x, 3, reparameterized=False), axis=0)
        return lower_bound.reinforce().mean(), lower_bound
    return step


def _data(seed=0, n=N):
    return torch.bernoulli(torch.full((n, X_DIM), 0.3), generator=torch.Generator().manual_seed(seed))


def _train(make_step, traced, n_steps=6, batches=None):
    torch.manual_seed(0)
    gen, guide = _templates()
    step = make_step(gen, guide)
    if traced:
        step = inference.TracedStep(step, {"model": gen, "guide": guide})
    optimizer = None
    costs = []
    for i in range(n_steps):
        x = batches[i] if batches is not None else _data(i)
        cost, bound = step(x)
        if optimizer is None:
            optimizer = torch.optim.Adam(list(gen.parameters()) + list(guide.parameters()), 0.05)
        optimizer.zero_grad()
        cost.backward()
        optimizer.step()
        costs.append((cost.item(), torch.mean(bound).item()))
    params = [p.detach().clone() for p in list(gen.parameters()) + list(guide.parameters())]
    return costs, params, step, gen


@pytest.mark.parametrize("make_step", [_sgvb_step, _reinforce_step])
def test_replayed_training_equals_eager_training(make_step):
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no fallback to eager may happen
        traced_costs, traced_params, traced, traced_gen = _train(make_step, traced=True)
    eager_costs, eager_params, _, eager_gen = _train(make_step, traced=False)
    # eager, eager (layers made), record, record again and replay, replay 2 (checked), replay
    assert traced.n_traced == 1 and traced.n_eager == 4
    torch.testing.assert_close(traced_costs, eager_costs, rtol=1e-6, atol=1e-6)
    for a, b in zip(traced_params, eager_params):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
    # REINFORCE's moving average lives in the model template and is updated by the replay
    torch.testing.assert_close(traced_gen.state_dict(), eager_gen.state_dict())


def test_each_input_shape_gets_its_own_recording():
    batches = [_data(i, n=N if i % 2 else 3) for i in range(8)]
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        traced_costs, _, traced, _ = _train(_sgvb_step, True, n_steps=8, batches=batches)
    eager_costs, _, _, _ = _train(_sgvb_step, False, n_steps=8, batches=batches)
    assert traced.n_traced == 2
    torch.testing.assert_close(traced_costs, eager_costs, rtol=1e-6, atol=1e-6)


def _recorded(make_step=_reinforce_step):
    gen, guide = _templates()
    step = inference.TracedStep(make_step(gen, guide), {"model": gen, "guide": guide})
    for i in range(3):
        step(_data(i))
    assert step.n_traced == 1
    return step, gen


def test_a_bad_observation_in_a_replay_raises_the_eager_error_and_changes_nothing():
    step, gen = _recorded()
    before = {k: v.clone() for k, v in gen.state_dict().items()}
    bad = _data(5)
    bad[1, 2] = 0.5
    with pytest.raises(ValueError, match=r"node 'x'.*outside the support"):
        step(bad)
    for key, value in gen.state_dict().items():  # the moving average was not updated
        torch.testing.assert_close(value, before[key])


def test_the_replay_names_the_node_of_a_nonfinite_bound():
    step, _ = _recorded(_sgvb_step)
    x = _data(7)
    with torch.no_grad():
        step._holder.parts["guide"].layers["h"].bias[Z_DIM] = float("inf")  # logstd of z
    cost, bound = step(x)
    assert isinstance(bound, inference.TracedObjective)
    assert not torch.isfinite(cost)
    assert bound.nonfinite_node() == "z"


def test_trainer_with_trace_reports_the_node_and_trains_as_without():
    def run(trace):
        torch.manual_seed(0)
        gen, guide = _templates()
        trainer = inference.Trainer({"model": gen, "guide": guide},
                                    lambda params: torch.optim.Adam(params, lr=0.05),
                                    progress=False, trace=trace)
        history = trainer.fit(_sgvb_step(gen, guide), [_data(i) for i in range(4)], n_epochs=3)
        return history, trainer, guide

    traced_history, trainer, guide = run(True)
    eager_history, _, _ = run(False)
    torch.testing.assert_close(traced_history, eager_history, rtol=1e-6, atol=1e-6)
    traced = next(iter(trainer._traced.values()))
    assert traced.n_traced == 1
    with torch.no_grad():
        guide.layers["h"].weight.fill_(float("nan"))
    with pytest.raises(FloatingPointError, match="node 'z'"):
        trainer.fit(_sgvb_step(*[trainer.modules["model"], guide]), [_data(0)], n_epochs=4)


def test_a_no_grad_block_stays_without_gradient_in_the_replay():
    gen, guide = _templates()
    frozen = nn.Linear(X_DIM, X_DIM)

    def step(x):
        with torch.no_grad():
            x_features = torch.sigmoid(frozen(x)).round()
        lower_bound = inference.elbo(gen(x.shape[0]), {"x": x_features},
                                     variational=guide(x), axis=0)
        return lower_bound.sgvb().mean(), lower_bound

    traced = inference.TracedStep(step, {"model": gen, "guide": guide, "frozen": frozen})
    for i in range(4):
        cost, _ = traced(_data(i))
        cost.backward()
    assert traced.n_traced == 1
    assert frozen.weight.grad is None and guide.layers["h"].weight.grad is not None


def test_a_step_that_reads_values_in_python_runs_eagerly_with_a_warning():
    gen, guide = _templates()
    sgvb = _sgvb_step(gen, guide)

    def step(x):
        cost, bound = sgvb(x)
        return (cost * 2 if float(x.sum()) > 10 else cost), bound

    traced = inference.TracedStep(step, {"model": gen, "guide": guide})
    with pytest.warns(RuntimeWarning, match="reads tensor values in Python"):
        for i in range(3):
            traced(_data(i))
    assert traced.n_traced == 0
    torch.manual_seed(3)
    cost, _ = traced(_data(9))
    torch.manual_seed(3)
    assert cost.item() == step(_data(9))[0].item()


def test_a_parameter_outside_the_modules_is_refused():
    gen, guide = _templates()
    scale = nn.Parameter(torch.tensor(2.))
    sgvb = _sgvb_step(gen, guide)

    def step(x):
        cost, bound = sgvb(x)
        return cost * scale, bound

    traced = inference.TracedStep(step, {"model": gen, "guide": guide})
    with pytest.warns(RuntimeWarning, match="not a parameter of `modules`"):
        for i in range(3):
            traced(_data(i))
    cost, _ = traced(_data(4))
    cost.backward()
    assert traced.n_traced == 0 and scale.grad is not None


def test_bad_arguments():
    with pytest.raises(TypeError, match="step_fn"):
        inference.TracedStep(3, {})
    with pytest.raises(TypeError, match="modules"):
        inference.TracedStep(lambda x: x, [nn.Linear(1, 1)])


def test_tensor_arguments_vary_between_replays():
    """A KL-annealing weight passed as a tensor is an input of the recording, not a constant;
    arguments in nested containers are found too."""
    gen, guide = _templates()

    def step(batch):
        x, beta = batch["x"], batch["beta"]
        lower_bound = inference.elbo(gen(x.shape[0]), {"x": x}, variational=guide(x), axis=0)
        log_w = lower_bound._log_weight()
        return -(beta * log_w).mean(), lower_bound

    traced = inference.TracedStep(step, {"model": gen, "guide": guide})
    step({"x": _data(0), "beta": torch.tensor(1.)})  # the templates make their layers
    for i in range(6):
        batch = {"x": _data(i), "beta": torch.tensor(0.1 * (i + 1))}
        torch.manual_seed(i)
        cost, _ = traced(batch)
        torch.manual_seed(i)
        expected, _ = step(batch)
        assert cost.item() == pytest.approx(expected.item(), rel=1e-6)
    assert traced.n_traced == 1


def test_trainer_with_trace_resumes_from_a_checkpoint(tmp_path):
    def run(n_epochs, path):
        torch.manual_seed(0)
        gen, guide = _templates()
        trainer = inference.Trainer({"model": gen, "guide": guide},
                                    lambda params: torch.optim.Adam(params, lr=0.05),
                                    progress=False, trace=True, checkpoint_path=path)
        return trainer.fit(_sgvb_step(gen, guide), lambda epoch: [_data(10 * epoch + i)
                                                                  for i in range(3)], n_epochs)

    straight = run(4, None)
    run(2, tmp_path / "run.pt")
    resumed = run(4, tmp_path / "run.pt")
    torch.testing.assert_close(resumed, straight, rtol=1e-6, atol=1e-6)


def _annealed_training(traced, schedule, n_steps=12):
    """Training where the step computes its KL weight in Python from a counter the loop
    advances (the usual warm-up): returns the per-call costs and the step."""
    torch.manual_seed(0)
    gen, guide = _templates()
    sgvb = _sgvb_step(gen, guide)
    progress = {"t": 0}

    def step(x):
        beta = schedule(progress["t"])  # a Python float, different from call to call
        cost, lower_bound = sgvb(x)
        return beta * cost, lower_bound

    if traced:
        step = inference.TracedStep(step, {"model": gen, "guide": guide})
    optimizer, costs = None, []
    for i in range(n_steps):
        progress["t"] = i
        cost, _ = step(_data(i))
        if optimizer is None:  # the templates made their layers on the first call
            optimizer = torch.optim.Adam(list(gen.parameters()) + list(guide.parameters()),
                                         0.05)
        optimizer.zero_grad()
        cost.backward()
        optimizer.step()
        costs.append(cost.item())
    return costs, step


def test_an_annealed_python_coefficient_is_never_replayed_frozen():
    schedule = lambda t: min(1., (t + 1) / 10)  # noqa: E731
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        traced_costs, traced = _annealed_training(True, schedule)
    eager_costs, _ = _annealed_training(False, schedule)
    torch.testing.assert_close(traced_costs, eager_costs, rtol=1e-6, atol=1e-6)  # every call
    messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(messages) == 1
    assert re.search(r"changed since it was recorded \(`.*0\.3.*` became `.*0\.4.*`\)"
                     r".*pass such values in as tensor arguments", messages[0]), messages[0]
    assert traced.n_traced == 0 and traced.n_eager == len(eager_costs)


def test_a_python_value_that_changes_later_is_caught_at_the_next_checked_replay():
    schedule = lambda t: 0.5 if t < 7 else 1.  # noqa: E731
    with pytest.warns(RuntimeWarning, match="replay 8 disagrees with the eager step"):
        traced_costs, traced = _annealed_training(True, schedule, n_steps=12)
    eager_costs, _ = _annealed_training(False, schedule, n_steps=12)
    # calls 1-3 eager, 4 confirmed and replayed, 8-10 replayed frozen, 11 = replay 8: caught
    torch.testing.assert_close(traced_costs[:7], eager_costs[:7], rtol=1e-6, atol=1e-6)
    assert traced.n_traced == 0


def test_record_graph_replays_through_public_torch_functions():
    from inference.traced import NotRecordable, record_graph
    offset = torch.tensor([0.5, -0.5])  # closed over: a constant of the graph

    def fn(average, x):
        average.mul_(0.9).add_(0.1 * x.mean())  # written in place: a mutated input
        return torch.relu(torch.nn.functional.linear(x, torch.eye(2)) + offset) * average

    recording = record_graph(fn, torch.zeros(()), torch.ones(3, 2))
    assert recording.mutated == (0,)
    assert "torch.ops.aten" not in recording.module.code  # C bindings, no OpOverload frames
    average, x = torch.zeros(()), torch.randn(3, 2)
    expected = fn(torch.zeros(()), x)
    torch.testing.assert_close(recording.module.forward(average, x), expected)
    torch.testing.assert_close(average, 0.1 * x.mean())

    def draws(x):
        torch.randn(4)  # unused, but it moves the generator on: kept in the recording
        return x + torch.randn(2)

    recording = record_graph(draws, torch.zeros(2))
    torch.manual_seed(1)
    replayed = recording.module.forward(torch.zeros(2))
    torch.manual_seed(1)
    torch.testing.assert_close(replayed, draws(torch.zeros(2)))

    with pytest.raises(NotRecordable, match="reads tensor values in Python"):
        record_graph(lambda x: x if float(x.sum()) > 0 else -x, torch.ones(2))


class _SharedLayers(nn.Module):
    """A layer registered under two names, and a weight tied between two layers."""

    def __init__(self):
        super().__init__()
        self.first = nn.Linear(X_DIM, 2 * Z_DIM)
        self.net = nn.Sequential(self.first, nn.Tanh(), nn.Linear(2 * Z_DIM, 2 * Z_DIM))
        self.tied = nn.Linear(2 * Z_DIM, 2 * Z_DIM)
        self.tied.weight = self.net[2].weight

    def forward(self, x):
        return self.tied(self.net(x))


def test_a_layer_registered_twice_and_tied_weights_replay_as_eager():
    def train(traced):
        torch.manual_seed(0)
        gen, _ = _templates()

        @ppl.reuse_variables(scope="q")
        def guide(x, n_particles=1):
            bn = ppl.BayesianNet()
            h = ppl.module("h", _SharedLayers)(x)
            bn.normal("z", h[..., :Z_DIM], logstd=h[..., Z_DIM:], group_ndims=1,
                      n_samples=n_particles)
            return bn

        step = _sgvb_step(gen, guide)
        trainer = inference.Trainer({"model": gen, "guide": guide},
                                    lambda params: torch.optim.Adam(params, lr=0.05),
                                    progress=False, trace=traced)
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)  # no fallback to eager
            history = trainer.fit(step, [_data(i) for i in range(6)], n_epochs=1)
        return history, guide.state_dict()

    traced_history, traced_state = train(traced=True)
    eager_history, eager_state = train(traced=False)
    torch.testing.assert_close(traced_history, eager_history, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(traced_state, eager_state, rtol=1e-6, atol=1e-6)
    for value in traced_state.values():
        assert type(value) is torch.Tensor  # no fake tensor left behind in the modules
