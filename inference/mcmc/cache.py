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
"""
import contextlib
import os

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
        if persistent is not None:
            stack.enter_context(_precompiled_headers_in(os.path.join(persistent,
                                                                     "precompiled_headers")))
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
