"""jit_compile: compiled NUTS steps and HMC leapfrogs equal the eager ones; failures fall back."""
import json
import shutil
import warnings

import pytest
import torch

import inference
import ppl
from inference import torch_compat
from inference.mcmc import Potential, hmc_kernel, identity_metric, init_state, nuts_kernel
from inference.mcmc import compile as mcmc_compile
from inference.mcmc import sampler
from inference.mcmc.compile import CompiledStep, shifted
from tests.inference._mcmc_targets import assert_moments, conjugate_cases

needs_compiler = pytest.mark.skipif(shutil.which("g++") is None and shutil.which("c++") is None,
                                    reason="Inductor compiles C++: no C++ compiler here")


@ppl.meta_bayesian_net()
def logistic_regression(x):
    bn = ppl.BayesianNet()
    beta = bn.normal("beta", torch.zeros(x.shape[1], dtype=x.dtype), std=1., group_ndims=1)
    bn.bernoulli("y", beta @ x.T, group_ndims=1)
    return bn


def _logistic_potential(n_chains=4, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(40, 3, generator=g, dtype=dtype)
    y = torch.bernoulli(torch.sigmoid(x @ torch.tensor([1., -1., .5], dtype=dtype)), generator=g)
    beta = 0.3 * torch.randn(n_chains, 3, generator=g, dtype=dtype)
    return Potential(logistic_regression(x), {"y": y}, {"beta": beta}), beta


def _setup(n_chains=4):
    potential, beta = _logistic_potential(n_chains)
    state = init_state(potential, potential.unconstrain({"beta": beta}))
    metric = identity_metric(n_chains, 3, dtype=torch.float64)
    metric.inverse_mass.mul_(torch.linspace(0.5, 1.5, 3, dtype=torch.float64))
    metric._mass_sqrt = metric.inverse_mass.rsqrt()
    step_size = torch.linspace(0.2, 0.5, n_chains, dtype=torch.float64)
    return potential, state, metric, step_size


def _run(transition, state, n=3, seed=5):
    torch.manual_seed(seed)
    states, infos = [], []
    for _ in range(n):
        state, info = transition(state)
        states.append(state)
        infos.append(info)
    return states, infos


def _assert_same_transitions(eager, compiled):
    for (s1, i1), (s2, i2) in zip(zip(*eager), zip(*compiled)):
        torch.testing.assert_close(s2.position, s1.position, rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(s2.log_prob, s1.log_prob, rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(s2.grad, s1.grad, rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(i2.accept_prob, i1.accept_prob, rtol=1e-9, atol=1e-9)
        assert torch.equal(i2.n_steps, i1.n_steps)
        assert torch.equal(i2.tree_depth, i1.tree_depth)
        assert torch.equal(i2.diverging, i1.diverging)


def _only_step(kernel):
    (step,) = kernel._steps.values()
    assert isinstance(step, CompiledStep)
    return step


@needs_compiler
@pytest.mark.parametrize("name", ["nuts", "hmc"])
def test_compiled_step_gives_the_eager_transitions(name):
    """A compiled NUTS leaf / HMC leapfrog step: the same transitions as the eager kernel."""
    potential, state, metric, step_size = _setup()
    if name == "nuts":
        kernel = inference.NUTS(max_tree_depth=6, jit_compile=True)
        eager = _run(lambda s: nuts_kernel(s, potential, step_size, metric, 6), state)
    else:
        kernel = inference.HMC(n_leapfrogs=7, jit_compile=True)
        eager = _run(lambda s: hmc_kernel(s, potential, step_size, metric, 7), state)
    compiled = _run(lambda s: kernel.transition(s, potential, step_size, metric), state)
    step = _only_step(kernel)
    assert step.is_compiled, step.reason
    if name == "nuts":  # the tree step, compiled once for every model (shared_compile)
        (shared,) = kernel._shared.values()
        assert shared.is_compiled and shared.n_fallbacks == 0, shared.reason
    _assert_same_transitions(eager, compiled)
    assert max(int(i.n_steps.max()) for i in compiled[1]) > 3  # real trajectories were built


@needs_compiler
def test_nuts_without_flags_compiles_in_a_run_and_steps_eagerly_in_sample():
    """The default (jit_compile=None) takes the compiled path in `inference.mcmc.run` where
    the tree step is built (here by the first, jit_compile=True kernel, as the install's
    build step does), and ZhuSuan's step-at-a-time `.sample()` (often on new data at every
    call) runs eagerly."""
    potential, state, metric, step_size = _setup()
    inference.NUTS(max_tree_depth=6, jit_compile=True).iterate(state, potential, step_size,
                                                               metric, 1)
    kernel = inference.NUTS(max_tree_depth=6)
    with warnings.catch_warnings():
        warnings.simplefilter("error", inference.mcmc.NotPrecompiledWarning)
        kernel.iterate(state, potential, step_size, metric, 3)
    assert _only_step(kernel).is_compiled
    (shared,) = kernel._shared.values()
    assert shared.is_compiled and shared.loaded_from_disk, shared.reason
    online = inference.NUTS()
    online.sample(lambda v: -0.5 * v["z"].square().sum(-1), {}, {"z": torch.zeros(2, 3)})
    assert online._steps == {} and online._shared == {}


@needs_compiler
def test_nuts_without_flags_compiles_only_the_gradient_where_the_tree_step_is_not_built(
        empty_cache, monkeypatch):
    """Where the install's build step was skipped (an empty cache), a default run does not
    pause 20-30 s to build the tree step: it compiles the model's gradient alone, runs the
    tree a doubling at a time, and says once which command builds the tree step. The draws
    are those of the compiled leaf step (the same streams and leapfrog steps)."""
    monkeypatch.setattr(sampler, "_SAID_NOT_BUILT", set())
    potential, state, metric, step_size = _setup()
    kernel = inference.NUTS(max_tree_depth=6)
    with pytest.warns(inference.mcmc.NotPrecompiledWarning,
                      match="`python -m inference.mcmc.precompile --dtype float64 --metric "
                            "diag`") as said:
        torch.manual_seed(3)  # (the chains' random streams)
        first = kernel.iterate(state, potential, step_size, metric, 3)
        kernel.iterate(state, potential, step_size, metric, 2)
    assert sum(w.category is inference.mcmc.NotPrecompiledWarning for w in said) == 1
    assert kernel._shared == {}
    (step,) = kernel._steps.values()
    assert step.name == "NUTS gradient, unmasked" and step.status == "compiled"
    assert len(list((empty_cache / "compiled").iterdir())) == 1  # the gradient's entry only
    leaf = inference.NUTS(max_tree_depth=6, jit_compile=False)
    monkeypatch.setattr(sampler, "DOUBLING_MEMORY", 0)  # (the leaf step: eager here)
    torch.manual_seed(3)
    eager = leaf.iterate(state, potential, step_size, metric, 3)
    torch.testing.assert_close(first[1], eager[1], rtol=1e-9, atol=1e-9)
    assert torch.equal(first[2]["n_steps"], eager[2]["n_steps"])


def test_nuts_without_flags_says_once_that_it_runs_eagerly_without_a_compiler(monkeypatch):
    """Without a compiler the default records the model's gradient once and replays it
    (no Inductor, no shared tree step), and says so once."""
    monkeypatch.setattr(sampler, "compiler_available", lambda: False)
    monkeypatch.setattr(sampler, "_SAID_NO_COMPILER", [])
    potential, state, metric, step_size = _setup()
    kernel = inference.NUTS(max_tree_depth=5)
    with pytest.warns(RuntimeWarning, match="no C\\+\\+ compiler found .* run uncompiled") as said:
        for _ in range(2):
            after, positions, _, _ = kernel.iterate(state, potential, step_size, metric, 2)
    (step,) = kernel._steps.values()
    assert len(said) == 1 and step.status == "recorded" and kernel._shared == {}
    assert positions.shape == (2, 4, 3) and torch.isfinite(after.position).all()


def test_failed_compilation_warns_and_runs_eagerly(monkeypatch):
    def no_compiler(*args, **kwargs):
        raise RuntimeError("no C++ compiler found")
    monkeypatch.setattr(torch_compat, "inductor_compile", no_compiler)
    potential, state, metric, step_size = _setup()
    kernel = inference.NUTS(max_tree_depth=5, jit_compile=True)
    eager = _run(lambda s: nuts_kernel(s, potential, step_size, metric, 5), state, n=2)
    with pytest.warns(RuntimeWarning, match="no C\\+\\+ compiler found"):
        compiled = _run(lambda s: kernel.transition(s, potential, step_size, metric), state, n=2)
    step = _only_step(kernel)
    assert not step.is_compiled and "no C++ compiler" in step.reason
    _assert_same_transitions(eager, compiled)


@needs_compiler
def test_model_reading_latent_values_in_python_is_not_compiled():
    """A Python number read from a latent cannot be traced: a warning, and it runs eagerly."""
    def log_joint(values):
        z = values["z"]
        scale = 1. + float(z.detach().abs().max())
        return -0.5 * (z ** 2).sum(-1) / scale

    z = torch.randn(3, 2, dtype=torch.float64)
    potential = Potential(log_joint, {}, {"z": z})
    state = init_state(potential, potential.unconstrain({"z": z}))
    metric = identity_metric(3, 2, dtype=torch.float64)
    step_size = torch.full((3,), 0.3, dtype=torch.float64)
    kernel = inference.HMC(n_leapfrogs=4, jit_compile=True)
    eager = _run(lambda s: hmc_kernel(s, potential, step_size, metric, 4), state, n=2)
    with pytest.warns(RuntimeWarning, match="reads tensor values in Python"):
        compiled = _run(lambda s: kernel.transition(s, potential, step_size, metric), state, n=2)
    assert not _only_step(kernel).is_compiled
    _assert_same_transitions(eager, compiled)


@needs_compiler
def test_sample_recompiles_for_new_observed_data():
    """ZhuSuan's `.sample()` loop: same data, one compilation; new data, a new one."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(30, 3, generator=g, dtype=torch.float64)
    model = logistic_regression(x)
    y1 = torch.bernoulli(torch.full((30,), 0.3, dtype=torch.float64), generator=g)
    y2 = 1. - y1
    latent = {"beta": torch.zeros(2, 3, dtype=torch.float64)}
    hmc = inference.HMC(step_size=0.1, n_leapfrogs=3, jit_compile=True)
    latent, _ = hmc.sample(model, {"y": y1}, latent)
    first = _only_step(hmc)
    latent, _ = hmc.sample(model, {"y": y1}, latent)
    assert _only_step(hmc) is first and first.is_compiled
    latent, info = hmc.sample(model, {"y": y2}, latent)
    assert _only_step(hmc) is not first and _only_step(hmc).is_compiled
    # the log joint it reports is the one of the new data
    expected = model.observe(y=y2, beta=latent["beta"]).log_joint()
    torch.testing.assert_close(info.log_prob, expected, rtol=1e-9, atol=1e-9)


@needs_compiler
def test_compiled_nuts_recovers_a_conjugate_posterior():
    name, model, observed, latent, mean, second = conjugate_cases()[2]  # normal-normal
    kernel = inference.NUTS(jit_compile=True)
    result = inference.mcmc.run(kernel, model, observed, n_chains=8, n_warmup=200,
                                n_samples=250, progress=False, seed=1)
    assert _only_step(kernel).is_compiled
    assert_moments(result.samples[latent], mean, second, name=name)
    assert result.num_divergences.sum() == 0


@needs_compiler
def test_a_model_error_in_a_compiled_step_rejects_the_move():
    """Cholesky fails where |z| > 1: the compiled step raises, the eager one masks the chain."""
    def log_joint(values):
        z = values["z"][:, 0]
        one = torch.ones_like(z)
        matrix = torch.stack((torch.stack((one, z), -1), torch.stack((z, one), -1)), -2)
        chol = torch.linalg.cholesky(matrix)
        return -torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1) - 4.5 * z ** 2

    z = torch.tensor([[0.1], [0.2], [0.5]], dtype=torch.float64)
    potential = Potential(log_joint, {}, {"z": z})
    state = init_state(potential, potential.unconstrain({"z": z}))
    metric = identity_metric(3, 1, dtype=torch.float64)
    kernel = inference.HMC(n_leapfrogs=5, jit_compile=True)
    torch.manual_seed(0)
    small = torch.full((3,), 0.01, dtype=torch.float64)
    state, _ = kernel.transition(state, potential, small, metric)  # compiled at a good point
    step_size = torch.tensor([0.05, 0.3, 0.6], dtype=torch.float64)
    diverged = torch.zeros(3, dtype=torch.bool)
    for _ in range(20):
        state, info = kernel.transition(state, potential, step_size, metric)
        diverged |= info.diverging
    step = _only_step(kernel)
    assert step.is_compiled and step.n_fallbacks > 0
    assert diverged.any()
    assert state.position.abs().max() < 1 and torch.isfinite(state.log_prob).all()


@needs_compiler
def test_a_compile_says_so_before_it_starts_and_a_load_is_quiet(empty_cache, capfd,
                                                                monkeypatch):
    """A run that must compile pauses for seconds: it says so first (the README's NUTS example
    sat at 0% for 8 s without a word). A load is quiet, unless it takes more than
    `LOAD_NOTICE_AFTER` seconds (Inductor's first load in a process took 4-5 s): then it
    says so in one line."""
    def step(x):
        return (torch.cos(x).sum(-1) * 0.75,)
    x = torch.randn(4, 3, dtype=torch.float64)
    first = CompiledStep(step, step, shifted(0), name="test gradient")
    torch.testing.assert_close(first(x)[0], step(x)[0])
    assert first.status == "compiled", first.status
    assert "jit_compile: compiling the test gradient for this model" in capfd.readouterr().err
    monkeypatch.setattr(mcmc_compile, "LOAD_NOTICE_AFTER", 1e9)
    later = CompiledStep(step, step, shifted(0), name="test gradient")
    torch.testing.assert_close(later(x)[0], step(x)[0])
    assert later.status == "loaded", later.status
    assert capfd.readouterr().err == ""
    monkeypatch.setattr(mcmc_compile, "LOAD_NOTICE_AFTER", 0.)  # every load is slow
    slow = CompiledStep(step, step, shifted(0), name="test gradient")
    torch.testing.assert_close(slow(x)[0], step(x)[0])
    assert slow.status == "loaded", slow.status
    err = capfd.readouterr().err
    assert err.count("\n") == 1 and "compiling" not in err
    assert "jit_compile: loading the compiled test gradient for this model from the cache" in err


@needs_compiler
def test_inductors_c_shim_notice_is_not_shown(empty_cache, capfd):
    """`python -m inference.mcmc.precompile` printed "aten.linalg_cholesky_ex.default is
    missing a c-shim implementation, using proxy executor as fallback": Inductor's note on
    its own coverage (the op runs all the same), nothing a user can act on."""
    def step(x):
        chol = torch.linalg.cholesky(x @ x.mT + torch.eye(3, dtype=x.dtype))
        return (torch.linalg.solve_triangular(chol, x, upper=False) * 1.5,)
    x = torch.randn(4, 3, 3, dtype=torch.float64)
    for _ in range(2):  # Inductor cannot save this step: each kernel compiles it anew
        compiled = CompiledStep(step, step, shifted(0))
        torch.testing.assert_close(compiled(x)[0], step(x)[0])
        assert compiled.status == "compiled", compiled.status
        err = capfd.readouterr().err
        assert "c-shim" not in err and "CacheWarning" not in err, err[-2000:]


@needs_compiler
def test_a_compile_goes_without_an_unbuilt_header_and_loads_under_the_same_setting(
        empty_cache, monkeypatch):
    """Inductor's precompiled header lives under the temporary directory (a reboot empties it)
    and takes about 7 s to build, a new model's whole compile without it about 6 s: a compile
    where it is not built goes without it, the entry keeps that setting, and a load compiles
    under it again (another setting would compile the step anew)."""
    used = []

    def recording(graph, inputs, dynamic_shapes, options):
        used.append(options["cpp_cache_precompile_headers"])
        return real(graph, inputs, dynamic_shapes, options)
    real = torch_compat.inductor_compile
    monkeypatch.setattr(torch_compat, "inductor_compile", recording)
    monkeypatch.setattr(mcmc_compile, "inductor_headers_built", lambda: False)

    def step(x):
        return (torch.sin(x).sum(-1) * 1.25,)
    x = torch.randn(4, 3, dtype=torch.float64)
    first = CompiledStep(step, step, shifted(0))
    torch.testing.assert_close(first(x)[0], step(x)[0])
    assert first.status == "compiled" and used == [False]
    (entry,) = (empty_cache / "compiled").iterdir()
    assert json.loads((entry / "ppl-settings.json").read_text()) == {
        "cpp_cache_precompile_headers": False}
    monkeypatch.setattr(mcmc_compile, "inductor_headers_built", lambda: True)
    later = CompiledStep(step, step, shifted(0))
    torch.testing.assert_close(later(x)[0], step(x)[0])
    assert later.status == "loaded" and used == [False, False]


def test_a_new_entry_uses_the_header_where_built_or_while_building_headers(monkeypatch, tmp_path):
    """...or where the cache keeps a copy and puts it back (`restore_precompiled_headers`)."""
    for built, building, kept, expected in [(False, False, False, False),
                                            (True, False, False, True),
                                            (False, True, False, True),
                                            (False, False, True, True)]:
        folder = tmp_path / f"{built}-{building}-{kept}"
        folder.mkdir()
        monkeypatch.setattr(mcmc_compile, "inductor_headers_built", lambda: built)
        monkeypatch.setattr(mcmc_compile, "restore_precompiled_headers", lambda: kept)
        if building:
            with mcmc_compile.building_headers():
                settings = mcmc_compile._entry_settings(str(folder))
        else:
            settings = mcmc_compile._entry_settings(str(folder))
        assert settings == {"cpp_cache_precompile_headers": expected}
        monkeypatch.setattr(mcmc_compile, "inductor_headers_built", lambda: not built)
        monkeypatch.setattr(mcmc_compile, "restore_precompiled_headers", lambda: not kept)
        assert mcmc_compile._entry_settings(str(folder)) == settings  # as saved


@needs_compiler
def test_a_chainwise_gradient_compiles_for_any_number_of_rows():
    """`rows=True`: a model's gradient (one row per chain) is compiled once for any number of
    chains, and agrees with the eager one on a few rows alone."""
    potential, beta = _logistic_potential(n_chains=8)
    x = potential.unconstrain({"beta": beta})
    step = CompiledStep(potential.traceable, potential, shifted(0), rows=True)
    full = step(x)
    assert step.is_compiled and step.takes_rows
    for rows in ([0, 1, 2, 3], [7, 2, 5, 0, 1], [6, 3, 1, 0, 2, 4, 5]):
        part = step(x[rows])
        for value, eager, every in zip(part, potential(x[rows]), full):
            torch.testing.assert_close(value, eager, rtol=1e-9, atol=1e-9)
            # a row's last bits may depend on its place in the batch (the BLAS's blocks)
            torch.testing.assert_close(value, every[rows], rtol=1e-12, atol=1e-12)


@needs_compiler
def test_a_gradient_that_mixes_its_rows_is_compiled_for_its_own_shape_only():
    """A function whose rows depend on each other, or that fixes the chain count, is still
    compiled (for the shape it was called with) but not offered for fewer rows."""
    weights = torch.linspace(1., 2., 8, dtype=torch.float64)

    def mixes(x):
        return (x.sum(0, keepdim=True) * x).sum(-1), 2 * x

    def fixed(x):
        return (x ** 2).sum(-1) * weights, 2 * x

    x = torch.randn(8, 3, dtype=torch.float64)
    for fn in (mixes, fixed):
        step = CompiledStep(fn, fn, shifted(0), rows=True)
        torch.testing.assert_close(step(x), fn(x))
        assert step.is_compiled and not step.takes_rows
    def chainwise(x):
        return (x ** 2).sum(-1), 2 * x
    few = CompiledStep(chainwise, chainwise, shifted(0), rows=True)
    few(x[:6])
    assert few.is_compiled and not few.takes_rows  # fewer than 2 * ROW_GROUP chains


def _replayed_operations(graph):
    return [node.target for node in graph.graph.nodes if node.op == "call_function"]


def test_a_recorded_step_computes_once_what_does_not_depend_on_its_inputs():
    """The uncompiled path's replay (`fold_constants`): a gradient's seed (`ones_like` and
    its expansions), views of the data and `detach` are not replayed; the values at another
    point are the eager ones, and an output is a new tensor at every call."""
    from torch.fx.experimental.proxy_tensor import make_fx
    data = torch.randn(30, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))

    def value_and_grad(w):
        w = w.detach().requires_grad_(True)
        with torch.enable_grad():
            value = -0.5 * ((w - torch.zeros(3, dtype=torch.float64)) ** 2).sum(-1) \
                - torch.nn.functional.softplus(w @ data.T).sum(-1)
            grad, = torch.autograd.grad(value, w, torch.ones_like(value))
        return value.detach(), grad, torch.ones(2)

    w = torch.randn(4, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    recorded = make_fx(value_and_grad)(w)
    folded = mcmc_compile.fold_constants(make_fx(value_and_grad)(w), (w,))
    before, after = _replayed_operations(recorded), _replayed_operations(folded)
    for gone in (torch.ops.aten.detach.default, torch.ops.aten.ones_like.default,
                 torch.ops.aten.zeros.default, torch.ops.aten.permute.default):
        assert gone in before and gone not in after, gone
    assert len(after) <= len(before) - 6
    for got, expected in zip(folded(w + 0.5), value_and_grad(w + 0.5)):
        torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
    assert folded(w)[2] is not folded(w)[2]  # (a constant output is still made anew)


@pytest.mark.parametrize("kind", ["in place", "random"])
def test_a_recording_that_mutates_or_draws_keeps_its_operations(kind):
    from torch.fx.experimental.proxy_tensor import make_fx

    def step(x):
        noise = torch.ones(3)
        if kind == "in place":
            noise.mul_(2.)
        else:
            noise = noise + torch.rand(3)
        return x * noise

    x = torch.ones(2, 3)
    folded = mcmc_compile.fold_constants(make_fx(step)(x), (x,))
    assert torch.ops.aten.ones.default in _replayed_operations(folded)
    if kind == "random":
        assert not torch.equal(folded(x), folded(x))
    else:
        torch.testing.assert_close(folded(x), 2. * x)
