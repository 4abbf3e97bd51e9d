"""Where compiled steps are kept on disk: one folder per user, kept across reboots.

    $PPL_CACHE_DIR (default ~/.cache/ppl, or $XDG_CACHE_HOME/ppl)
        compiled/<hash>/   NUTS's tree step, shared by every model (`shared_compile`)
        inductor/          Inductor's cache for a model's own compiled gradient (`compile`)

Inductor's default cache is under the temporary directory, which a reboot
empties; its precompiled C++ header (several seconds to build) is kept there
whatever TORCHINDUCTOR_CACHE_DIR says. Our compiles put both in the folder
above, so that a machine set up once (`python -m inference.mcmc.precompile`)
stays set up. A user who points TORCHINDUCTOR_CACHE_DIR elsewhere keeps that
choice.

A compiled step is one C++ file: the wrapper (its header precompiled by
Inductor) and the kernels, which include Inductor's vectorization header
(`cpp_prefix.h`), parsed anew for every model. Our compiles precompile both
headers together, which takes a new model's C++ compile from about 1.9 s to
1.4 s here.

On a CPU with AVX-512 BF16 or VNNI, Inductor also loads a small probe
library for each in a new Python process, once per process (about 0.5 s,
even when it only loads a step compiled before). Our compiles trust the
CPU's vector instructions (`cpp.vec_isa_ok`, `inference.mcmc.compile`): the
probes are still built, not loaded in a subprocess.
"""
import contextlib
import os
import pathlib

__all__ = ["cache_root", "inductor_cache_dir", "inductor_cache"]


def cache_root():
    """$PPL_CACHE_DIR, else ~/.cache/ppl (or $XDG_CACHE_HOME/ppl)."""
    if os.environ.get("PPL_CACHE_DIR"):
        return os.environ["PPL_CACHE_DIR"]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "ppl")


def inductor_cache_dir():
    """Inductor's cache for our compiles: $TORCHINDUCTOR_CACHE_DIR where the user chose one,
    else <cache_root()>/inductor. (Inductor writes its default into the variable at its
    first use, so a value equal to that default counts as no choice.)"""
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir
    chosen = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    if chosen and os.path.abspath(chosen) != os.path.abspath(default_cache_dir()):
        return chosen
    return os.path.join(cache_root(), "inductor")


@contextlib.contextmanager
def inductor_cache(directory=None):
    """Inductor compiles into `directory` (default `inductor_cache_dir()`) within the block,
    its precompiled headers into `inductor_cache_dir()`; where a folder cannot be created,
    Inductor's own is used."""
    from torch._inductor.runtime.cache_dir_utils import temporary_cache_dir
    persistent = _creatable(inductor_cache_dir())
    directory = _creatable(directory) if directory else persistent
    with contextlib.ExitStack() as stack:
        stack.enter_context(_vector_isa_probes_trusted())
        if persistent is not None:
            headers = os.path.join(persistent, "precompiled_headers")
            stack.enter_context(_precompiled_headers_in(headers))
            stack.enter_context(_kernel_header_precompiled_with_the_wrapper(headers))
        if directory is not None and os.environ.get("TORCHINDUCTOR_CACHE_DIR") != directory:
            stack.enter_context(temporary_cache_dir(directory))
        yield


def _creatable(directory):
    """`directory` as an absolute path once it exists, or None where it cannot be created."""
    directory = os.path.abspath(directory)
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError:
        return None
    return directory


@contextlib.contextmanager
def _vector_isa_probes_trusted():
    """Within the block, a vector-instruction probe that Inductor built counts as loadable,
    without loading it in a subprocess (Inductor asks only for instructions the CPU reports);
    where a torch version lacks the hook, nothing changes."""
    from torch._inductor import cpu_vec_isa
    isa = getattr(cpu_vec_isa, "VecISA", None)
    if not callable(getattr(isa, "__dict__", {}).get("_probe_load")):
        yield
        return
    original = isa.__dict__["_probe_load"]
    isa._probe_load = lambda self, path: os.path.isfile(path)
    try:
        yield
    finally:
        isa._probe_load = original


@contextlib.contextmanager
def _precompiled_headers_in(directory):
    """Inductor's precompiled headers go to `directory` within the block. Inductor fixes
    their folder (module globals of torch._inductor.codecache) at import, under the
    temporary directory; where a torch version lacks them, nothing changes."""
    from torch._inductor import codecache
    names = ("_HEADER_DIR", "_HEADER_LOCK_DIR")
    if not all(isinstance(getattr(codecache, name, None), str) for name in names):
        yield
        return
    saved = [getattr(codecache, name) for name in names]
    codecache._HEADER_DIR, codecache._HEADER_LOCK_DIR = directory, os.path.join(directory,
                                                                                "locks")
    try:
        yield
    finally:
        codecache._HEADER_DIR, codecache._HEADER_LOCK_DIR = saved


@contextlib.contextmanager
def _kernel_header_precompiled_with_the_wrapper(directory):
    """Within the block, the header Inductor precompiles for a C++-wrapped CPU step also
    includes the kernels' header (written to `directory`); where a torch version lacks
    the hook, or the folder cannot be written, nothing changes."""
    from torch._inductor import codecache
    wrapper_cache = getattr(codecache, "CppWrapperCodeCache", None)
    headers = [getattr(codecache, name, None) for name in ("_get_cpp_wrapper_header",
                                                            "_get_cpp_prefix_header")]
    if "_get_uncompiled_header" not in getattr(wrapper_cache, "__dict__", {}) or \
            not all(callable(get) for get in headers):
        yield
        return
    original = wrapper_cache.__dict__["_get_uncompiled_header"]

    def both_headers(cls, device):
        wrapper, kernels = (get(device) for get in headers)
        if not device.startswith("cpu") or kernels is None:
            return original.__func__(cls, device)
        combined = pathlib.Path(directory, "ppl_cpp_wrapper_and_kernels.h")
        text = f"#include <{wrapper}>\n#include <{kernels}>\n"
        try:
            if not combined.is_file() or combined.read_text() != text:
                combined.parent.mkdir(parents=True, exist_ok=True)
                partial = combined.with_name(f"{combined.name}.{os.getpid()}")
                partial.write_text(text)
                partial.replace(combined)  # atomic: processes may race
        except OSError:
            return original.__func__(cls, device)
        return str(combined)

    wrapper_cache._get_uncompiled_header = classmethod(both_headers)
    try:
        yield
    finally:
        wrapper_cache._get_uncompiled_header = original
