"""The private PyTorch symbols the library still needs, each with the reason, in one place.

Everything else in `ppl` and `inference` uses public torch APIs only. Each
entry below says why no public API does its job. `tests/inference/
test_torch_compat.py` uses every one and fails, naming the symbol and the
torch version, when an upgrade removes or changes it: a torch upgrade is
caught by CI, never by users as a silent fallback to a slower path.
To add one: re-export it here with its reason, list it in `PRIVATE`, and add
its use to the test.
"""
from torch.fx.experimental.proxy_tensor import make_fx
from torch.utils import _pytree

__all__ = ["PRIVATE", "tree_flatten", "tree_unflatten", "make_fx_fake", "op_schema"]

# The private names used here (for the test, and for a reader checking an upgrade).
PRIVATE = ("torch.utils._pytree", "make_fx(_allow_non_fake_inputs=True)", "OpOverload._schema")

# A step's nested arguments (a dict batch, a list of tensors) are flattened to tensors
# and rebuilt exactly as torch.func and torch.fx do it; torch has no public pytree module.
tree_flatten = _pytree.tree_flatten
tree_unflatten = _pytree.tree_unflatten


def make_fx_fake(fn):
    """`make_fx(fn)` on fake tensors (nothing is computed while recording), before
    dispatch (a `torch.no_grad()` block in `fn` stays in the graph), reading the real
    tensors `fn` closes over (constants, data) as constants of the graph.

    Private: the keyword `_allow_non_fake_inputs`. Without it fake tracing refuses any
    real tensor that is not an argument, and a training step reads many (a constant
    offset, a mask, data held by a closure); real-tensor tracing instead would compute
    the step and bake data-dependent shapes into the graph.
    """
    return make_fx(fn, tracing_mode="fake", pre_dispatch=True, _allow_non_fake_inputs=True)


def op_schema(op):
    """The `torch.FunctionSchema` of an ATen operator overload (`torch.ops.aten.add_.Tensor`):
    its arguments and which of them it writes in place.

    Private: `OpOverload._schema`; torch has no public accessor. Needed to know which
    of a module's buffers a recorded step writes in place (a moving average), so that
    a replay can be undone before re-running the step eagerly.
    """
    return op._schema
