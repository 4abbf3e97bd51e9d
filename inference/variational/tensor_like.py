"""`TensorLike`: an object that stands for a tensor, as ZhuSuan's objectives do.

Subclasses provide `tensor`; torch functions (`torch.mean(lower_bound)`),
operators (`-lower_bound`, `lower_bound + 1`) and tensor attributes
(`lower_bound.shape`, `.mean()`) then act on that tensor.
"""
from ppl.stochastic_tensor import unwrap

__all__ = ["TensorLike"]


class TensorLike:
    """Mixin: torch functions, operators and unknown attributes go to `self.tensor`."""

    @property
    def tensor(self):
        raise NotImplementedError

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        return func(*_to_tensors(args), **_to_tensors(kwargs or {}))

    def __getattr__(self, item):
        # Only reached for names not found otherwise.
        if item.startswith("_"):
            raise AttributeError(item)
        return getattr(self.tensor, item)

    def __neg__(self):
        return -self.tensor

    def __pos__(self):
        return self.tensor

    def __abs__(self):
        return abs(self.tensor)

    def __float__(self):
        return float(self.tensor.detach())  # a number has no gradient: no requires-grad warning

    def __len__(self):
        return len(self.tensor)

    def __getitem__(self, index):
        return self.tensor[index]

    def __array__(self, dtype=None):
        array = self.tensor.detach().cpu().numpy()
        return array if dtype is None else array.astype(dtype)


def _to_tensors(obj):
    if isinstance(obj, TensorLike):
        return obj.tensor
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_tensors(o) for o in obj)
    if isinstance(obj, dict):
        return {k: _to_tensors(v) for k, v in obj.items()}
    return unwrap(obj)


def _operator(name):
    def method(self, other):
        return getattr(self.tensor, name)(_to_tensors(other))
    method.__name__ = name
    return method


for _name in ("add", "sub", "mul", "truediv", "pow", "matmul"):
    setattr(TensorLike, f"__{_name}__", _operator(f"__{_name}__"))
    setattr(TensorLike, f"__r{_name}__", _operator(f"__r{_name}__"))
for _name in ("lt", "le", "gt", "ge"):
    setattr(TensorLike, f"__{_name}__", _operator(f"__{_name}__"))
del _name
