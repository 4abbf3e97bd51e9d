"""Every private torch symbol of `inference.torch_compat` is still there and still works.

A failure names the symbol and the torch version: update `inference/torch_compat.py`
(and the torch requirement in pyproject.toml) before users meet a slow fallback.
"""
import contextlib
import importlib

import pytest
import torch


@contextlib.contextmanager
def _symbol(name):
    try:
        yield
    except Exception as error:  # noqa: BLE001 -- any failure means the symbol changed
        pytest.fail(f"private torch symbol {name} is gone or changed in torch "
                    f"{torch.__version__} ({type(error).__name__}: {error}); update "
                    f"inference/torch_compat.py", pytrace=False)


def _compat():
    with _symbol("(importing inference.torch_compat)"):
        return importlib.import_module("inference.torch_compat")


def test_pytree_flattens_and_rebuilds_nested_arguments():
    compat = _compat()
    batch = {"x": torch.ones(2), "beta": [torch.tensor(0.5), 3]}
    with _symbol("torch.utils._pytree"):
        leaves, spec = compat.tree_flatten(batch)
        assert len(leaves) == 3
        assert compat.tree_unflatten(leaves, spec) == batch


def test_make_fx_records_fake_tensors_reading_closed_over_real_tensors():
    compat = _compat()
    offset = torch.tensor([1., 2.])  # a real tensor the function closes over

    def fn(x):
        with torch.no_grad():
            y = x * 2
        return y + offset

    with _symbol("make_fx(_allow_non_fake_inputs=True)"):
        graph = compat.make_fx_fake(fn)(torch.ones(2))
        torch.testing.assert_close(graph(torch.ones(2)), torch.tensor([3., 4.]))
        assert "_set_grad_enabled" in graph.code  # pre-dispatch: the no_grad block is kept


def test_op_schema_says_which_arguments_are_written():
    compat = _compat()
    with _symbol("OpOverload._schema"):
        written = [argument.name for argument in
                   compat.op_schema(torch.ops.aten.add_.Tensor).arguments
                   if argument.alias_info is not None and argument.alias_info.is_write]
        assert written == ["self"]


def test_each_private_symbol_is_tested_here():
    with open(__file__) as source:
        text = source.read()
    for name in _compat().PRIVATE:
        assert f'_symbol("{name}")' in text, f"{name} has no test here"
