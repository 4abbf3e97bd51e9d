"""Where compiled steps are kept on disk, and what of it this library trusts to load.

    $PPL_CACHE_DIR (default ~/.cache/ppl, or $XDG_CACHE_HOME/ppl)
        compiled/<key>/   one compiled step per folder (an "entry"): NUTS's tree step, shared
                          by every model (`shared_compile`), and each model's gradient
                          (`compile`), with ppl-manifest.json (each file's size and sha256)
        inductor/         Inductor's precompiled C++ headers

Loading an entry runs its code (a shared library, Inductor's Python wrapper, pickles), so
`compiled_entry` loads nothing that may be damaged or that someone else could have written:

- An entry is built in a new folder beside it and renamed into place, manifest included;
  before a load every file is checked against the manifest. A damaged entry (a truncated
  library would kill the process on loading, SIGBUS) is rebuilt, with one `CacheWarning`
  naming its folder. No other path deletes an entry: one that verifies but fails to load
  is kept, and the step is compiled for this process only.
- The cache folder and everything under it on the way to what is loaded must belong to the
  user and be writable by nobody else (as ssh and pip require of their files). Otherwise
  the cache is ignored, with a `CacheWarning` saying why and how to fix it.
- A cache that cannot be written (read-only) is still loaded from (through a copy of the
  entry, as a load writes lock files); a step it lacks is compiled into a temporary folder
  of this process (removed at exit), with one warning.

Inductor's default cache is under the temporary directory, which a reboot empties; its
precompiled C++ header (several seconds to build) is kept there whatever
TORCHINDUCTOR_CACHE_DIR says. Our compiles keep the header in inductor/ above (or in
TORCHINDUCTOR_CACHE_DIR where a user chose one and it passes the same checks), so that a
machine set up once (`python -m inference.mcmc.precompile`) stays set up.

A compiled step is one C++ file: the wrapper (its header precompiled by Inductor) and the
kernels, which include Inductor's vectorization header (`cpp_prefix.h`), parsed anew for
every model. Our compiles precompile both headers together, which takes a new model's C++
compile from about 1.9 s to 1.4 s here.

On a CPU with AVX-512 BF16 or VNNI, Inductor also loads a small probe library for each in
a new Python process, once per process (about 0.5 s). Our compiles trust the CPU's vector
instructions (`cpp.vec_isa_ok`, `inference.mcmc.compile`): the probes are still built, not
loaded in a subprocess.
"""
import atexit
import contextlib
import hashlib
import json
import os
import pathlib
import shutil
import tempfile
import warnings

__all__ = ["CacheWarning", "cache_root", "inductor_cache_dir", "inductor_cache",
           "compiled_entry", "MANIFEST"]

MANIFEST = "ppl-manifest.json"
# Part of every entry's key: entries of an earlier layout (no manifest) are never loaded.
ENTRY_FORMAT = "entry format 2"


class CacheWarning(UserWarning):
    """A cache folder or entry was ignored or rebuilt (the message says why and what to do)."""


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


def compiled_entry(key, build, load, announce=None):
    """(function, loaded): the compiled step `key` loaded from <cache_root()>/compiled/<key>
    where a sound entry is there (see the module docstring), else built.

    build(folder): compiles with Inductor's cache in the new, empty `folder` and returns
    (function, storable: whether `load` can load it from there); load(folder): loads it
    from an entry; announce(): called before a build (to say that it takes a while). A
    built, storable folder becomes the entry where the cache can be written; otherwise it is
    private to this process.
    """
    root = _trusted_folder(cache_root(), "compiled", "ppl cache",
                           "set PPL_CACHE_DIR to a folder of your own")
    compiled = None if root is None else os.path.join(root, "compiled")
    entry = None if compiled is None else os.path.join(compiled, key)
    if entry is not None and os.path.lexists(entry):
        problem = _foreign(entry, root)
        if problem is not None:
            _warn_once(f"compiled step {entry} ignored: {problem}; {_fix(problem, root)}")
            entry = None
        else:
            try:  # a load writes lock files: a read-only entry is loaded from a copy
                source = entry if _writable(entry) else _copy_to_private(entry)
                damage = _damage(source)
                if damage is None:
                    return load(source), True
            except Exception as error:  # kept: it may be sound (a full disk, a torch fault)
                _warn_once(f"compiled step {entry} could not be loaded ({type(error).__name__}: "
                           f"{error}); compiling it for this process only")
                entry = None
            else:
                _warn_once(f"compiled step {entry} is {damage}: rebuilding it")
    if entry is not None and not _writable(compiled):
        _warn_once(f"ppl cache {root} cannot be written: compiled steps it lacks are compiled "
                   f"into a temporary folder for this process only (make it writable, or set "
                   f"PPL_CACHE_DIR to a writable folder, to keep them)")
        entry = None
    if announce is not None:
        announce()
    building = tempfile.mkdtemp(prefix=".building-", dir=compiled if entry else _private())
    try:
        function, storable = build(building)
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise
    try:
        if not storable:
            raise OSError("nothing to keep")
        _seal(building)
    except OSError:  # e.g. a full disk: the step is loaded already, nothing is kept
        shutil.rmtree(building, ignore_errors=True)
        return function, False
    if entry is not None:
        _put_in_place(building, entry)
    return function, False


@contextlib.contextmanager
def inductor_cache(directory):
    """Inductor compiles into `directory` within the block, its precompiled headers into
    `inductor_cache_dir()` where that folder can be written and passes the checks of
    `compiled_entry` (else where Inductor keeps them: they only save time)."""
    from torch._inductor.runtime.cache_dir_utils import temporary_cache_dir
    persistent = None
    if _writable(inductor_cache_dir()):
        persistent = _trusted_folder(inductor_cache_dir(), "precompiled_headers",
                                     "Inductor cache", "set TORCHINDUCTOR_CACHE_DIR or "
                                     "PPL_CACHE_DIR to a folder of your own")
    with contextlib.ExitStack() as stack:
        stack.enter_context(_vector_isa_probes_trusted())
        if persistent is not None:
            headers = os.path.join(persistent, "precompiled_headers")
            stack.enter_context(_precompiled_headers_in(headers))
            stack.enter_context(_kernel_header_precompiled_with_the_wrapper(headers))
        stack.enter_context(temporary_cache_dir(os.path.abspath(directory)))
        yield


def _trusted_folder(folder, below, what, alternative):
    """`folder` as an absolute path, created if need be; None (with one warning saying why)
    where it cannot be created, or where it, its subfolder `below` or what that holds (not
    the subfolder's subfolders) belongs to another user or can be written by others."""
    folder = os.path.abspath(folder)
    try:
        os.makedirs(folder, mode=0o700, exist_ok=True)
    except OSError as error:
        _warn_once(f"{what} {folder} cannot be created ({error}); {alternative}")
        return None
    problem = _foreign(os.path.join(folder, below), folder, depth=1)
    if problem is not None:
        _warn_once(f"{what} {folder} ignored: {problem}; anyone who can write there could "
                   f"run code in this process. {_fix(problem, folder)}, or {alternative}")
        return None
    return folder


def _foreign(path, root, depth=None):
    """Why someone other than the user could have written `path` (below `root`, or `root`
    itself): the first folder or file from `root` down to `path`, and under `path` (`depth`
    levels down, default all), that belongs to another user or that its group or others may
    write to; None if none."""
    if not hasattr(os, "getuid"):  # no owners to check (Windows)
        return None
    chain = [root]
    for part in pathlib.Path(os.path.relpath(path, root)).parts:
        if part != ".":
            chain.append(os.path.join(chain[-1], part))
    for folder, folders, files in os.walk(path):
        chain += [os.path.join(folder, name) for name in folders + files]
        if depth is not None and folder.count(os.sep) - path.count(os.sep) + 1 >= depth:
            folders.clear()
    for item in chain:
        try:
            status = os.stat(item)
        except OSError:  # vanished meanwhile (a concurrent rename): nothing to load there
            continue
        if status.st_uid != os.getuid():
            return f"{item} belongs to user id {status.st_uid}, not to you ({os.getuid()})"
        if status.st_mode & 0o022:
            return f"{item} can be written by its group or by others"
    return None


def _fix(problem, root):
    """How to fix what `_foreign` found."""
    if "belongs to user id" in problem:
        return f"Fix: `chown -R $USER {root}` (or remove it)"
    return f"Fix: `chmod -R go-w {root}`"


def _damage(entry):
    """'damaged (why)' where a file of `entry` is missing or differs from its manifest,
    else None."""
    try:
        files = json.loads(pathlib.Path(entry, MANIFEST).read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        return f"damaged (no readable manifest: {type(error).__name__})"
    for name, (size, digest) in files.items():
        path = os.path.normpath(os.path.join(entry, name))
        if os.path.isabs(name) or not path.startswith(os.path.join(entry, "")):
            return f"damaged (its manifest names {name!r}, outside the entry)"
        try:
            if os.path.getsize(path) != size:
                return f"damaged ({name}: {os.path.getsize(path)} bytes, {size} written)"
            if _sha256(path) != digest:
                return f"damaged ({name}: its checksum differs from the one written)"
        except OSError:
            return f"damaged ({name} is missing or unreadable)"
    return None


def _seal(folder):
    """Make what a build wrote writable by its owner only (a umask may have let the group
    write) and record each file's size and sha256 (lock files aside) in `folder`/MANIFEST."""
    files = {}
    for parent, folders, names in os.walk(folder):
        for name in folders + names:
            path = os.path.join(parent, name)
            os.chmod(path, os.stat(path).st_mode & ~0o022)
        for name in names:
            path = os.path.join(parent, name)
            relative = os.path.relpath(path, folder)
            if relative != MANIFEST and not relative.startswith("locks" + os.sep):
                files[relative] = [os.path.getsize(path), _sha256(path)]
    manifest = pathlib.Path(folder, MANIFEST)
    manifest.write_text(json.dumps({"files": files}, indent=0))
    manifest.chmod(0o644)


def _sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _put_in_place(building, entry):
    """Rename the built folder to `entry`, replacing a damaged one; where another process
    put a sound entry there first, keep theirs."""
    try:
        if os.path.lexists(entry) and _damage(entry) is not None:
            aside = tempfile.mkdtemp(prefix=".damaged-", dir=os.path.dirname(entry))
            os.rename(entry, os.path.join(aside, "entry"))
            shutil.rmtree(aside, ignore_errors=True)
        os.rename(building, entry)
    except OSError:
        shutil.rmtree(building, ignore_errors=True)


def _writable(folder):
    """Whether files can be created in `folder` (a read-only mount defeats os.access)."""
    try:
        os.makedirs(folder, mode=0o700, exist_ok=True)
        tempfile.TemporaryFile(dir=folder).close()
    except OSError:
        return False
    return True


_PRIVATE = []


def _private():
    """A folder of this process's own, removed at exit."""
    if not _PRIVATE:
        _PRIVATE.append(tempfile.mkdtemp(prefix="ppl-private-"))
        atexit.register(shutil.rmtree, _PRIVATE[0], ignore_errors=True)
    return _PRIVATE[0]


def _copy_to_private(entry):
    """A copy of `entry` in this process's own folder (verified after copying)."""
    copy = os.path.join(tempfile.mkdtemp(dir=_private()), os.path.basename(entry))
    shutil.copytree(entry, copy)
    return copy


_WARNED = set()


def _warn_once(message):
    if message not in _WARNED:
        _WARNED.add(message)
        warnings.warn(message, CacheWarning, stacklevel=3)


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
