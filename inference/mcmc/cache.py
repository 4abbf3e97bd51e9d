"""Where compiled steps are kept on disk, and what of it this library trusts to load.

    $PPL_CACHE_DIR (default ~/.cache/ppl, or $XDG_CACHE_HOME/ppl)
        compiled/<key>/   one compiled step per folder (an "entry"): NUTS's tree step, shared
                          by every model (`shared_compile`), and each model's gradient
                          (`compile`), with ppl-manifest.json (each file's size and sha256)

Loading an entry runs its code (a shared library, Inductor's Python wrapper, pickles), so
`compiled_entry` loads nothing that may be damaged or that someone else could have written:

- An entry is built in a new folder beside it and renamed into place, manifest included;
  before a load every file is checked against the manifest. Code that names its own files
  by absolute path (Inductor's C++ wrapper on CUDA loads each kernel's cubin from where it
  was built) is built in the entry itself instead (`in_place`), under a lock on
  `compiled/<key>.lock`, the manifest written last: a rename would leave it pointing
  nowhere. A damaged entry (a truncated library would kill the process on loading, SIGBUS)
  is rebuilt, with one `CacheWarning` naming its folder. No other path deletes an entry:
  one that verifies but fails to load is kept, and the step is compiled for this process
  only.
- The cache folder and everything under it on the way to what is loaded must belong to the
  user and be writable by nobody else (as ssh and pip require of their files). Otherwise
  the cache is ignored, with a `CacheWarning` saying why and how to fix it.
- A cache that cannot be written (read-only) is still loaded from (through a copy of the
  entry, as a load writes lock files); a step it lacks is compiled into a temporary folder
  of this process (removed at exit), with one warning.

    $PPL_CACHE_DIR/headers/   a copy of Inductor's precompiled C++ header, as the setup step
                          built it (`keep_precompiled_headers`)
    $PPL_CACHE_DIR/cpu-probes/  Inductor's probes of the CPU's vector extensions, built once
                          per machine (`probe_folder`)

Inductor keeps its precompiled C++ headers (seconds to build, compiled into every step) in a
folder of its own under the temporary directory, whatever TORCHINDUCTOR_CACHE_DIR says, and no
public setting moves them: a reboot empties it. `restore_precompiled_headers` puts the cache's
copy back there before a compile, so that a new model compiles with the header after a reboot
too (about 1.7 s less on the logistic regression of benchmarks/hmc_blr.py). As they are
compiled into every step, `inductor_headers_checked` applies the same checks to that folder
before a compile, and refuses to compile where someone else could write there.
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

from inference import torch_compat

try:
    import fcntl
except ImportError:  # (not POSIX: entries are built beside and renamed, see `compiled_entry`)
    fcntl = None

__all__ = ["CacheWarning", "CacheError", "cache_root", "inductor_cache",
           "inductor_headers_checked", "inductor_headers_built", "keep_precompiled_headers",
           "restore_precompiled_headers", "probe_folder", "compiled_entry", "entry_on_disk",
           "MANIFEST"]

MANIFEST = "ppl-manifest.json"
# Part of every entry's key: entries of an earlier layout (no manifest) are never loaded.
ENTRY_FORMAT = "entry format 4"


class CacheWarning(UserWarning):
    """A cache folder or entry was ignored or rebuilt (the message says why and what to do)."""


class CacheError(RuntimeError):
    """A folder that a compile would use can be written by someone else (the message says
    which and how to fix it); the step runs eagerly."""


def cache_root():
    """$PPL_CACHE_DIR, else ~/.cache/ppl (or $XDG_CACHE_HOME/ppl)."""
    if os.environ.get("PPL_CACHE_DIR"):
        return os.environ["PPL_CACHE_DIR"]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "ppl")


def compiled_entry(key, build, load, announce=None, in_place=False):
    """(function, loaded): the compiled step `key` loaded from <cache_root()>/compiled/<key>
    where a sound entry is there (see the module docstring), else built.

    build(folder): compiles with Inductor's cache in the new, empty `folder` and returns
    (function, storable: whether `load` can load it from there); load(folder): loads it
    from an entry; announce(): called before a build (to say that it takes a while). A
    built, storable folder becomes the entry where the cache can be written; otherwise it is
    private to this process.
    in_place: build in the entry's own folder, under an exclusive lock (another process
    building it meanwhile is waited for, then loaded from), for a function whose code names
    its files by absolute path; where no lock can be taken, as without it.
    """
    root = _trusted_folder(cache_root(), "compiled", "ppl cache",
                           "set PPL_CACHE_DIR to a folder of your own")
    compiled = None if root is None else os.path.join(root, "compiled")
    entry = None if compiled is None else os.path.join(compiled, key)
    with _entry_lock(entry if in_place else None) as locked:
        return _load_or_build(root, compiled, entry, build, load, announce, locked)


@contextlib.contextmanager
def _entry_lock(entry):
    """Hold an exclusive lock on `entry`.lock within the block (waiting for another holder);
    yields whether it does (not for entry None, off POSIX, or where the file cannot be made or
    locked: a read-only cache, a network file system without locks)."""
    lock = None
    if entry is not None and fcntl is not None and _writable(os.path.dirname(entry)):
        with contextlib.suppress(OSError):
            lock = open(entry + ".lock", "a")
    if lock is not None:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
        except OSError:
            lock.close()
            lock = None
    if lock is None:
        yield False
        return
    with lock:
        try:
            yield True
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _load_or_build(root, compiled, entry, build, load, announce, in_place):
    """`compiled_entry` once the entry's place is known (`in_place`: under its lock)."""
    if entry is not None and os.path.lexists(entry):
        found = _foreign(entry, root)
        if found is not None:
            _warn_once(f"compiled step {entry} ignored: {found[0]}; {found[1]}")
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
    in_place = in_place and entry is not None
    if in_place:  # a damaged entry, or one half built by a process that died
        if os.path.lexists(entry):
            shutil.rmtree(entry)
        os.makedirs(entry, mode=0o700)
        building = entry
    else:
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
        if not in_place:  # (in place, the function's own files: left without a manifest,
            shutil.rmtree(building, ignore_errors=True)  # the next build replaces them)
        return function, False
    if entry is not None and not in_place:
        _put_in_place(building, entry)
    return function, False


def entry_on_disk(key):
    """Whether the cache holds an entry for the compiled step `key` (`compiled_entry` would
    load it rather than build it, unless it turns out damaged)."""
    root = _trusted_folder(cache_root(), "compiled", "ppl cache",
                           "set PPL_CACHE_DIR to a folder of your own")
    return root is not None and os.path.isfile(os.path.join(root, "compiled", key, MANIFEST))


def inductor_cache(directory):
    """A context manager: Inductor keeps its cache in `directory` within the block."""
    return torch_compat.inductor_cache_in(os.path.abspath(directory))


@contextlib.contextmanager
def inductor_headers_checked():
    """Within the block Inductor may compile: its precompiled-header folder (see the module
    docstring) is created by us where it is missing (writable by the user only), checked
    before (CacheError where another user owns it, or its group or others may write to it
    or to what it holds), and what Inductor wrote there is made writable by the user only
    after (a umask may have let the group write)."""
    folder = torch_compat.inductor_header_dir()
    root = os.path.dirname(folder)
    with contextlib.suppress(OSError):  # else Inductor says why when it needs the folder
        os.makedirs(root, mode=0o700, exist_ok=True)
        os.makedirs(folder, mode=0o700, exist_ok=True)
    found = _foreign(folder, root, depth=1)
    if found is not None:
        raise CacheError(f"Inductor's header folder {folder} is not safe to compile with: "
                         f"{found[0]}. {found[1]}")
    try:
        yield
    finally:
        for name in os.listdir(folder) if os.path.isdir(folder) else ():
            path = os.path.join(folder, name)
            with contextlib.suppress(OSError):
                status = os.stat(path)
                if status.st_uid == os.getuid() and status.st_mode & 0o022:
                    os.chmod(path, status.st_mode & ~0o022)


def inductor_headers_built():
    """Whether Inductor's precompiled-header folder holds a built header (a `.gch` file; a
    reboot empties the folder)."""
    try:
        return any(name.endswith(".gch") for name in os.listdir(torch_compat.inductor_header_dir()))
    except OSError:
        return False


HEADERS = "headers"  # the cache's copy of Inductor's precompiled header


def _pairs(folder):
    """The precompiled headers in `folder`: names of the `.h` files beside a `.h.gch`."""
    try:
        names = set(os.listdir(folder))
    except OSError:
        return []
    return sorted(name for name in names if name.endswith(".h") and name + ".gch" in names)


def keep_precompiled_headers(folder, root=None):
    """Copy the precompiled headers of Inductor's header `folder` (one that holds this
    install's alone: the setup step builds them in a new temporary directory) into
    <root>/headers (default `cache_root()`), in place of what it held (each file replaced
    at once, so that a compile restoring them meanwhile finds whole files). Returns their
    names."""
    root = _trusted_folder(root or cache_root(), HEADERS, "ppl cache",
                           "set PPL_CACHE_DIR to a folder of your own")
    names = _pairs(folder)
    if root is None or not names:
        return []
    kept = os.path.join(root, HEADERS)
    os.makedirs(kept, mode=0o700, exist_ok=True)
    for name in names:
        for file in (name, name + ".gch"):
            _copy_whole(os.path.join(folder, file), os.path.join(kept, file))
    for stale in set(_pairs(kept)) - set(names):
        for file in (stale + ".gch", stale):
            with contextlib.suppress(OSError):
                os.remove(os.path.join(kept, file))
    return names


def _copy_whole(source, target):
    """Copy `source` to `target` through a temporary file beside it, renamed into place."""
    part = tempfile.NamedTemporaryFile(dir=os.path.dirname(target), delete=False).name
    try:
        shutil.copyfile(source, part)
        os.replace(part, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(part)
        raise


def restore_precompiled_headers():
    """Put the precompiled headers the cache keeps (`keep_precompiled_headers`) into Inductor's
    header folder where they are missing (a reboot emptied it). Returns whether they are
    all there now (False where the cache keeps none, or where that folder or the cache's copy
    is not ours alone: see `inductor_headers_checked`)."""
    root = _trusted_folder(cache_root(), HEADERS, "ppl cache",
                           "set PPL_CACHE_DIR to a folder of your own")
    kept = None if root is None else os.path.join(root, HEADERS)
    names = [] if kept is None else _pairs(kept)
    if not names:
        return False
    folder = torch_compat.inductor_header_dir()
    try:
        os.makedirs(os.path.dirname(folder), mode=0o700, exist_ok=True)
        os.makedirs(folder, mode=0o700, exist_ok=True)
        if _foreign(folder, os.path.dirname(folder), depth=0) is not None:
            return False
        for name in names:
            for file in (name, name + ".gch"):  # the header first: Inductor looks for both
                target = os.path.join(folder, file)
                if not os.path.exists(target):
                    _copy_whole(os.path.join(kept, file), target)
    except OSError:
        return False
    return True


PROBES = "cpu-probes"


def probe_folder():
    """<cache_root()>/cpu-probes, created if need be: where Inductor builds its probes of the
    CPU's vector extensions (small libraries it builds and loads to test the compiler and
    CPU, `torch_compat.inductor_cpu_probes`), once per machine instead of once per compiled
    step. None where it, or anything in it, is not the user's alone, or cannot be written."""
    root = _trusted_folder(cache_root(), PROBES, "ppl cache",
                           "set PPL_CACHE_DIR to a folder of your own")
    if root is None:
        return None
    folder = os.path.join(root, PROBES)
    with contextlib.suppress(OSError):
        os.makedirs(folder, mode=0o700, exist_ok=True)
    if not os.path.isdir(folder) or not _writable(folder) or _foreign(folder, root) is not None:
        return None
    return folder


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
    found = _foreign(os.path.join(folder, below), folder, depth=1)
    if found is not None:
        _warn_once(f"{what} {folder} ignored: {found[0]}; anyone who can write there could "
                   f"run code in this process. {found[1]}, or {alternative}")
        return None
    return folder


def _foreign(path, root, depth=None):
    """Why someone other than the user could have written `path` (below `root`, or `root`
    itself): the first folder or file from `root` down to `path`, and under `path` (`depth`
    levels down, default all), that belongs to another user or that its group or others may
    write to, and how to fix it (under `root`): (problem, fix), or None if none."""
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
            return (f"{item} belongs to user id {status.st_uid}, not to you ({os.getuid()})",
                    f"Fix: `chown -R $USER {root}` (or remove it)")
        if status.st_mode & 0o022:
            return f"{item} can be written by its group or by others", \
                f"Fix: `chmod -R go-w {root}`"
    return None


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
