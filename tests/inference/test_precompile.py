"""inference.mcmc.precompile: the setup step builds the tree step that later runs load."""
import warnings

import pytest
import torch

import inference
from inference import torch_compat
from inference.mcmc.precompile import main, precompile
from inference.mcmc.shared_compile import FirstCompileWarning
from tests.inference.test_compile import needs_compiler


@needs_compiler
def test_a_later_run_on_another_model_loads_the_precompiled_tree_step(capfd):
    with warnings.catch_warnings():
        warnings.simplefilter("error", FirstCompileWarning)  # building is its job: no warning
        (row,) = main(["--dtype", "float64", "--metric", "diag"])
    assert row["dtype"] == "float64" and row["metric"] == "diag"
    assert row["status"] in ("compiled", "loaded"), row["status"]
    # It says what it builds before it starts (it was silent for 45 s), then how it went,
    # and nothing about its 10-iteration run or Inductor's internals.
    out, err = capfd.readouterr()
    before = "NUTS tree step, float64, diag metric: loading or building"
    assert out.index(before) < out.index(f"NUTS tree step, float64, diag metric: {row['status']}")
    assert "Warning" not in err and "c-shim" not in err, err[-2000:]
    # Another model, dimension, chain count and maximum tree depth: its run compiles only
    # its own gradient.
    kernel = inference.NUTS(jit_compile=True, max_tree_depth=6)
    scale = torch.arange(1., 6., dtype=torch.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", inference.mcmc.SamplingWarning)  # 5 + 5 iterations
        result = inference.mcmc.run(kernel, lambda v: -0.5 * (v["z"] / scale).square().sum(-1),
                                    init={"z": torch.zeros(3, 5, dtype=torch.float64)},
                                    n_warmup=5, n_samples=5, progress=False, seed=1)
    (shared,) = kernel._shared.values()
    assert shared.is_compiled and shared.loaded_from_disk
    assert result.samples["z"].shape == (3, 5, 5)
    assert precompile([torch.float64], ["diag"])[0]["status"] == "loaded"


def test_an_unknown_metric_is_refused():
    with pytest.raises(ValueError, match="`metrics` must be among"):
        precompile(metrics=["full"])


def test_a_run_that_builds_the_tree_step_names_the_command_for_its_dtype_and_metric(
        empty_cache, monkeypatch):
    """Where the build step was skipped (an empty cache), the run's warning gives the exact
    command that would have built this step: its dtype and metric."""
    monkeypatch.setattr(torch_compat, "inductor_compile",  # Inductor is tested elsewhere
                        lambda graph, inputs, dynamic_shapes, options: graph)
    kernel = inference.NUTS(jit_compile=True, adapt_mass="dense")
    with pytest.warns(FirstCompileWarning, match="NUTS tree step \\(float64\\).*"
                      "`python -m inference.mcmc.precompile --dtype float64 --metric dense`"):
        inference.mcmc.run(kernel, lambda v: -0.5 * v["z"].square().sum(-1),
                           init={"z": torch.zeros(2, 3, dtype=torch.float64)},
                           n_warmup=3, n_samples=2, progress=False, seed=0)


def test_without_a_compiler_the_setup_keeps_no_header_and_says_why(monkeypatch):
    """The install's build step must not fail where there is no C++ compiler (NUTS runs
    uncompiled there): it keeps no precompiled header, and says so."""
    from inference.mcmc import precompile as setup
    monkeypatch.setattr(setup, "compiler_available", lambda: False)
    assert setup.keep_headers() == ([], "no C++ compiler found")


def test_the_install_step_builds_float32_and_float64_with_both_metrics(monkeypatch):
    """`python -m inference.mcmc.precompile` with no arguments (README command 1) builds every
    tree step a default run may need: a model on NumPy data is float64."""
    from inference.mcmc import precompile as setup
    asked = []
    monkeypatch.setattr(setup, "precompile",
                        lambda dtypes, metrics, report: asked.append((dtypes, metrics)) or [])
    monkeypatch.setattr(setup, "keep_headers", lambda: ([], "not built in this test"))
    setup.main([])
    assert asked == [([torch.float32, torch.float64], ["diag", "dense"])]
