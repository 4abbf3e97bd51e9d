"""Samplers write their new samples into the caller's latent tensors, as ZhuSuan's samplers
assign its tf.Variables, without ever overwriting a sample they returned.

    x = torch.zeros(n_chains, n_x)
    for it in range(n_iters):
        _, info = hmc.sample(model, {}, {"x": x})     # x now holds the new sample
        kept.append(info.samples["x"])               # a new tensor each call

A sampler's `.sample(meta_bn, observed, latent)` returns new tensors (`hand_out`)
and copies them into the `latent` tensors the caller made (`write_back`): leaf
tensors (requires_grad or not, e.g. an nn.Parameter) whose memory is not
shared between elements (not an `expand`ed view). A tensor some sampler handed
out is never overwritten, so the functional style keeps its draws:

    latent, info = hmc.sample(model, observed, latent)
    kept.append(latent["x"])                         # not changed by the next call
"""
import weakref

import torch

__all__ = ["hand_out", "write_back"]

# storage address -> a tensor a sampler returned (the entry goes when the tensor does)
_HANDED_OUT = weakref.WeakValueDictionary()


def _address(tensor):
    return tensor.untyped_storage().data_ptr()


def hand_out(samples):
    """name -> a fresh copy of each sample, remembered as never to be overwritten."""
    fresh = {}
    for name, value in samples.items():
        value = value.detach().clone()
        if value.numel():
            _HANDED_OUT[_address(value)] = value
        fresh[name] = value
    return fresh


def _writable(tensor, sample):
    if not isinstance(tensor, torch.Tensor) or not tensor.is_leaf or tensor.is_inference():
        return False
    if tensor.shape != sample.shape or tensor.numel() == 0:
        return False
    if any(stride == 0 and size > 1 for stride, size in zip(tensor.stride(), tensor.shape)):
        return False  # an expanded view: one element stands for several
    return _HANDED_OUT.get(_address(tensor)) is None


def write_back(latent, samples):
    """Copy `samples[name]` into `latent[name]` where that is the caller's own leaf tensor."""
    targets = [(latent[name], value) for name, value in samples.items()
               if _writable(latent[name], value)]
    with torch.no_grad():
        for tensor, value in targets:
            tensor.copy_(value)
