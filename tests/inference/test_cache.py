"""inference.mcmc.cache: compiled steps live under PPL_CACHE_DIR (not /tmp), and nothing damaged
or writable by others is loaded from there."""
import contextlib
import errno
import os
import pathlib
import shutil
import subprocess
import sys
import warnings

import pytest
import torch

from inference import torch_compat
from inference.mcmc.cache import (MANIFEST, CacheError, CacheWarning, cache_root,
                                  compiled_entry, inductor_cache, inductor_headers_built,
                                  inductor_headers_checked)
from inference.mcmc.compile import CompiledStep, shifted
from inference.mcmc.shared_compile import SharedCompiledStep
from tests.inference.test_compile import needs_compiler

ROOT = pathlib.Path(__file__).resolve().parents[2]
needs_root = pytest.mark.skipif(not hasattr(os, "getuid") or os.getuid() != 0,
                                reason="changes a folder's owner, or mounts one")


def test_the_cache_root_is_ppl_cache_dir_else_the_users_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("PPL_CACHE_DIR", str(tmp_path))
    assert cache_root() == str(tmp_path)
    monkeypatch.delenv("PPL_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root() == str(tmp_path / "xdg" / "ppl")


def test_inductor_cache_switches_inductor_within_the_block_only(monkeypatch, tmp_path):
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    with inductor_cache(tmp_path / "building"):
        assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "building")
    # Afterwards Inductor's own choice again: absent, or its default folder (importing
    # Inductor's utilities for the first time sets the variable to that default).
    assert os.environ.get("TORCHINDUCTOR_CACHE_DIR") != str(tmp_path / "building")


@needs_compiler
def test_a_compiled_step_fills_the_cache_under_ppl_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("PPL_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)

    def step(x):
        return (torch.sin(x).sum(-1) * 3.25 + 0.125,)
    compiled = CompiledStep(step, step, shifted(0))
    x = torch.randn(5, 3, dtype=torch.float64)
    torch.testing.assert_close(compiled(x)[0], step(x)[0])
    assert compiled.is_compiled, compiled.reason
    (entry,) = (tmp_path / "compiled").iterdir()
    assert any(entry.rglob("*.so")) and (entry / "ppl-manifest.json").is_file()
    # the precompiled header stays in Inductor's own folder, written by the user only
    headers = pathlib.Path(torch_compat.inductor_header_dir())
    assert any(headers.glob("*.gch"))
    assert not any(path.stat().st_mode & 0o022 for path in headers.iterdir())


# A child process that runs (compiles or loads) tiny compiled steps and prints each one's
# status: loading a damaged library can kill a process, which must fail the test, not pytest.
_STEPS = """
import sys, warnings
import torch
warnings.simplefilter("always")
from inference.mcmc.compile import CompiledStep, shifted
for scale in map(float, sys.argv[1:]):
    def step(x):
        return (torch.sin(x).sum(-1) * scale + 0.125,)
    compiled = CompiledStep(step, step, shifted(0))
    x = torch.randn(5, 3, dtype=torch.float64)
    torch.testing.assert_close(compiled(x)[0], step(x)[0])
    print(compiled.status.split(":")[0])
"""


def _steps(*scales, user=None):
    """Run `_STEPS` for these scales in a new process (as `user`): (statuses, stderr)."""
    done = subprocess.run([sys.executable, "-c", _STEPS, *map(str, scales)], cwd=ROOT,
                          capture_output=True, text=True, timeout=600, user=user)
    assert done.returncode == 0, f"the child died ({done.returncode}): {done.stderr[-3000:]}"
    return done.stdout.split(), done.stderr


def _cache_warnings(stderr):
    return [line for line in stderr.splitlines() if "CacheWarning" in line]


def _snapshot(folder):
    return {path: path.read_bytes() for path in sorted(pathlib.Path(folder).rglob("*"))
            if path.is_file() and "locks" not in path.parts}


@needs_compiler
def test_inductors_cpu_probes_are_built_once_in_the_cache_not_in_each_step(empty_cache):
    """Inductor probes the CPU's vector extensions (AVX-512 BF16, VNNI, AMX: a small library
    built and loaded for each) at the first compile of a process, into that compile's cache
    folder. They are built into <cache>/cpu-probes, once per machine, and never into a
    compiled step's entry (where every new model paid about 1 s for them). On a CPU without
    such extensions Inductor builds none, and only the second half can fail."""
    assert _steps(1.5)[0] == ["compiled"]
    probes = empty_cache / "cpu-probes"
    built = {path: path.stat().st_mtime_ns for path in probes.rglob("*.so")}
    assert _steps(2.5)[0] == ["compiled"]  # another process, another model
    assert {path: path.stat().st_mtime_ns for path in probes.rglob("*.so")} == built
    in_entries = [path for path in (empty_cache / "compiled").rglob("*.cpp")
                  if "_chk_kernel" in path.read_text()]
    assert not in_entries, f"probes built into compiled steps: {in_entries}"


@needs_compiler
@pytest.mark.parametrize("damage", ["truncate", "overwrite"])
def test_a_damaged_library_is_rebuilt_with_one_warning_instead_of_loaded(empty_cache, damage):
    """A truncated or overwritten library of a compiled step killed every later process that
    loaded it (SIGBUS, no Python error). Its size and checksum, recorded at write time, show
    the damage before loading: the entry is rebuilt, with one warning naming its folder."""
    statuses, stderr = _steps(3.25)
    assert statuses == ["compiled"], stderr[-3000:]
    assert "jit_compile: compiling the step" in stderr  # a compile says so before it starts
    libraries = sorted(empty_cache.rglob("*.so"))
    assert libraries
    for library in libraries:
        data = library.read_bytes()
        if damage == "truncate":
            library.write_bytes(data[:2000])
        else:  # the same size: the ELF headers, then garbage
            library.write_bytes(data[:4096] + os.urandom(len(data) - 4096))
    statuses, stderr = _steps(3.25, 3.25)
    assert statuses == ["compiled", "loaded"], stderr[-3000:]
    (warned,) = _cache_warnings(stderr)
    (entry,) = (empty_cache / "compiled").iterdir()
    assert f"{entry} is damaged" in warned, warned
    statuses, stderr = _steps(3.25)
    assert statuses == ["loaded"] and not _cache_warnings(stderr)
    assert "jit_compile: compiling" not in stderr  # a load is quiet


_PLANT = "import pathlib; pathlib.Path({marker!r}).write_text('ran')\n"


def _plant(folder, marker):
    """Put code that writes `marker` at the top of every Python file under `folder`."""
    planted = sorted(pathlib.Path(folder).rglob("*.py"))
    assert planted
    for path in planted:
        path.write_text(_PLANT.format(marker=str(marker)) + path.read_text())


@needs_compiler
@pytest.mark.parametrize("how", ["group-writable", "another owner"])
def test_code_planted_in_a_cache_others_can_write_to_is_not_run(empty_cache, tmp_path, how):
    """A cache folder that someone else can write to (or that someone else owns) may hold
    their code: it is ignored, with a warning that says why and how to fix it."""
    if how == "another owner" and os.getuid() != 0:
        pytest.skip("changing a folder's owner needs root")
    assert _steps(1.5)[0] == ["compiled"]
    marker = tmp_path / "planted code ran"
    _plant(empty_cache, marker)
    if how == "group-writable":
        empty_cache.chmod(0o775)
    else:
        os.chown(empty_cache, 65534, -1)
    statuses, stderr = _steps(1.5)
    assert not marker.exists()
    assert statuses == ["compiled"], stderr[-3000:]
    (warned,) = _cache_warnings(stderr)
    if how == "group-writable":
        assert f"{empty_cache} can be written by its group or by others" in warned, warned
        assert f"chmod -R go-w {empty_cache}" in warned and "PPL_CACHE_DIR" in warned
    else:
        assert f"{empty_cache} belongs to user id 65534" in warned, warned
        assert f"chown -R $USER {empty_cache}" in warned and "PPL_CACHE_DIR" in warned


@needs_compiler
def test_an_entry_others_can_write_to_is_ignored_and_kept(empty_cache, tmp_path):
    assert _steps(1.75)[0] == ["compiled"]
    marker = tmp_path / "planted code ran"
    _plant(empty_cache, marker)
    (entry,) = (empty_cache / "compiled").iterdir()
    writable = next(path for path in entry.rglob("*.py"))
    writable.chmod(0o666)
    before = _snapshot(empty_cache)
    statuses, stderr = _steps(1.75)
    assert statuses == ["compiled"] and not marker.exists()
    (warned,) = _cache_warnings(stderr)
    assert f"{entry} ignored: {writable} can be written by its group or by others" in warned
    assert _snapshot(empty_cache) == before  # nothing deleted or replaced


def _step_fn(x):
    return (torch.sin(x) * 2.,)


def test_no_error_deletes_a_valid_entry(empty_cache, monkeypatch):
    """A load that fails for another reason than damage (here: a full disk) keeps the entry,
    which the next process can load; the step is compiled for this process only."""
    monkeypatch.setattr(torch_compat, "inductor_compile",  # Inductor is tested elsewhere
                        lambda graph, inputs, dynamic_shapes, options: graph)

    def shared():
        return SharedCompiledStep(_step_fn, key="test sin", layout=(("n", None),),
                                  modules=(shutil,), perturb=shifted(0))
    x = torch.randn(4, 3, dtype=torch.float64)
    with pytest.warns(UserWarning, match="building"):
        shared()(x)
    entries = list((empty_cache / "compiled").iterdir())
    kept = _snapshot(empty_cache / "compiled")

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(torch_compat, "inductor_load", full_disk)
    later = shared()
    with pytest.warns(CacheWarning, match="could not be loaded .*No space left"):
        torch.testing.assert_close(later(x)[0], _step_fn(x)[0])
    assert later.status == "compiled"
    assert entries and list((empty_cache / "compiled").iterdir()) == entries
    assert _snapshot(empty_cache / "compiled") == kept


@contextlib.contextmanager
def _read_only(folder):
    """`folder` mounted read-only on itself within the block (root only; else skip)."""
    mounted = subprocess.run(["mount", "--bind", str(folder), str(folder)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a read-only folder here: {mounted.stderr!r}")
    try:
        subprocess.run(["mount", "-o", "remount,ro,bind", str(folder)], check=True)
        yield
    finally:
        subprocess.run(["umount", str(folder)], check=True)


@needs_compiler
@needs_root
def test_a_read_only_cache_is_loaded_from_and_compiles_elsewhere_once(empty_cache, tmp_path,
                                                                       monkeypatch):
    """A read-only cache (here: a read-only mount) still serves what it holds; a step it
    lacks is compiled into a temporary folder, removed at exit, with one warning (it used
    to cost a failed compile per step, then ran eagerly), and the cache is left as it was."""
    assert _steps(2.5)[0] == ["compiled"]
    before = _snapshot(empty_cache)
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    with _read_only(empty_cache):
        statuses, stderr = _steps(2.5, 0.5, 0.75)
    assert statuses == ["loaded", "compiled", "compiled"], stderr[-3000:]
    (warned,) = _cache_warnings(stderr)
    assert f"ppl cache {empty_cache} cannot be written" in warned, warned
    assert _snapshot(empty_cache) == before
    assert not list((tmp_path / "tmp").glob("ppl-private-*"))  # removed at exit


def test_the_test_suite_uses_the_users_cache_and_makes_no_temporary_folder(tmp_path):
    """tests/conftest.py used to point PPL_CACHE_DIR at a new /tmp/ppl_cache_* folder per
    run: the suite ignored the install's precompiled step and left 190 MB behind each time."""
    env = {key: value for key, value in os.environ.items() if key != "PPL_CACHE_DIR"}
    env.update(HOME=str(tmp_path), TMPDIR=str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    done = subprocess.run([sys.executable, "-c", "import os, tests.conftest; "
                           "from inference.mcmc.cache import cache_root; print(cache_root())"],
                          cwd=ROOT, env={**env, "XDG_CACHE_HOME": ""}, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split()[-1] == str(tmp_path / ".cache" / "ppl")
    assert not any((tmp_path / "tmp").iterdir())


def test_inductors_header_folder_is_checked_before_a_compile(empty_cache, monkeypatch, tmp_path):
    """A precompiled header is compiled into every step: no compile where others can write
    to Inductor's header folder; it runs eagerly, with a warning saying how to fix it."""
    shared = tmp_path / "torchinductor" / "precompiled_headers"
    shared.mkdir(parents=True)
    shared.chmod(0o777)
    monkeypatch.setattr(torch_compat, "inductor_header_dir", lambda: str(shared))
    with pytest.raises(CacheError, match=f"{shared} can be written by its group or by others.*"
                                         f"chmod -R go-w"):
        with inductor_headers_checked():
            pass

    def step(x):
        return (torch.cos(x).sum(-1) * 1.75,)
    compiled = CompiledStep(step, step, shifted(0))
    x = torch.randn(4, 3, dtype=torch.float64)
    with pytest.warns(RuntimeWarning, match="CacheError: Inductor's header folder"):
        torch.testing.assert_close(compiled(x)[0], step(x)[0])
    assert not compiled.is_compiled
    shared.chmod(0o755)
    with inductor_headers_checked():  # what Inductor writes, as a umask of 002 leaves it
        (shared / "header.h.gch").write_text("")
        (shared / "header.h.gch").chmod(0o664)
    assert (shared / "header.h.gch").stat().st_mode & 0o777 == 0o644


def test_a_missing_header_folder_is_made_for_the_user_only(monkeypatch, tmp_path):
    folder = tmp_path / "torchinductor" / "precompiled_headers"
    monkeypatch.setattr(torch_compat, "inductor_header_dir", lambda: str(folder))
    with inductor_headers_checked():
        assert folder.parent.stat().st_mode & 0o777 == 0o700
        assert folder.stat().st_mode & 0o777 == 0o700


def test_inductors_header_counts_as_built_where_its_folder_holds_one(monkeypatch, tmp_path):
    folder = tmp_path / "precompiled_headers"
    monkeypatch.setattr(torch_compat, "inductor_header_dir", lambda: str(folder))
    assert not inductor_headers_built()  # no folder (after a reboot)
    folder.mkdir()
    (folder / "c4ht.h").write_text("#include <x.h>")
    assert not inductor_headers_built()
    (folder / "c4ht.h.gch").write_text("")
    assert inductor_headers_built()


def test_the_cache_keeps_the_setups_header_and_puts_it_back_after_a_reboot(monkeypatch,
                                                                          tmp_path):
    """`keep_precompiled_headers` copies the precompiled headers (pairs of .h and .h.gch) of the
    setup's header folder into <cache>/headers; `restore_precompiled_headers` puts the missing
    ones back into Inductor's folder (emptied by a reboot), leaving present ones alone."""
    from inference.mcmc.cache import keep_precompiled_headers, restore_precompiled_headers
    monkeypatch.setenv("PPL_CACHE_DIR", str(tmp_path / "cache"))
    built = tmp_path / "setup" / "precompiled_headers"
    built.mkdir(parents=True)
    (built / "c4ht.h").write_text("#include <cpu.h>")
    (built / "c4ht.h.gch").write_bytes(b"pch")
    (built / "lone.h").write_text("#include <x.h>")  # no .gch: not a precompiled header
    (built / "locks").mkdir()
    folder = tmp_path / "tmp" / "torchinductor_user" / "precompiled_headers"
    monkeypatch.setattr(torch_compat, "inductor_header_dir", lambda: str(folder))
    assert not restore_precompiled_headers()  # nothing kept yet
    assert keep_precompiled_headers(str(built)) == ["c4ht.h"]
    kept = tmp_path / "cache" / "headers"
    assert sorted(p.name for p in kept.iterdir()) == ["c4ht.h", "c4ht.h.gch"]

    assert restore_precompiled_headers() and inductor_headers_built()
    assert (folder / "c4ht.h.gch").read_bytes() == b"pch"
    assert folder.stat().st_mode & 0o777 == 0o700
    (folder / "c4ht.h.gch").write_bytes(b"Inductor's own")
    assert restore_precompiled_headers()
    assert (folder / "c4ht.h.gch").read_bytes() == b"Inductor's own"  # not replaced

    (built / "c4ht.h.gch").unlink()
    (built / "d5ab.h").write_text("#include <cpu.h>")
    (built / "d5ab.h.gch").write_bytes(b"new")
    assert keep_precompiled_headers(str(built)) == ["d5ab.h"]  # in place of what it held
    assert sorted(p.name for p in kept.iterdir()) == ["d5ab.h", "d5ab.h.gch"]


def test_no_header_is_put_into_a_folder_others_can_write_to(monkeypatch, tmp_path):
    from inference.mcmc.cache import keep_precompiled_headers, restore_precompiled_headers
    monkeypatch.setenv("PPL_CACHE_DIR", str(tmp_path / "cache"))
    built = tmp_path / "setup"
    built.mkdir()
    (built / "c4ht.h").write_text("#include <cpu.h>")
    (built / "c4ht.h.gch").write_bytes(b"pch")
    keep_precompiled_headers(str(built))
    folder = tmp_path / "shared" / "precompiled_headers"
    folder.mkdir(parents=True)
    folder.chmod(0o777)
    monkeypatch.setattr(torch_compat, "inductor_header_dir", lambda: str(folder))
    assert not restore_precompiled_headers()
    assert not any(folder.iterdir())


@needs_compiler
def test_after_a_reboot_a_compile_uses_the_kept_header_instead_of_building_one(tmp_path):
    """The install's setup (`python -m inference.mcmc.precompile`, which `.ci/run` runs)
    keeps Inductor's precompiled header in the cache; a compile in a new temporary
    directory (as after a reboot) puts it back and compiles with it: Inductor builds none."""
    kept = pathlib.Path(cache_root()) / "headers"
    names = sorted(p.name for p in kept.glob("*.h.gch")) if kept.is_dir() else []
    if not names:
        pytest.skip("no header kept: run `python -m inference.mcmc.precompile` first")
    script = ("import torch, tempfile\n"
              "from torch.fx.experimental.proxy_tensor import make_fx\n"
              "from inference import torch_compat\n"
              "from inference.mcmc.compile import compile_graph\n"
              "x = torch.zeros(2, 5)\n"
              "graph = make_fx(lambda v: (torch.sin(v) * 1.25).sum(-1))(x)\n"
              "with tempfile.TemporaryDirectory() as folder:\n"
              "    f, _ = compile_graph(graph, [x], 'from_example_inputs', folder)\n"
              "    assert torch.allclose(f(x)[0], (torch.sin(x) * 1.25).sum(-1))\n"
              "print(torch_compat.inductor_header_dir())\n")
    (tmp_path / "tmp").mkdir()
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                          text=True, timeout=600,
                          env={**os.environ, "TMPDIR": str(tmp_path / "tmp")})
    assert done.returncode == 0, done.stderr[-3000:]
    folder = pathlib.Path(done.stdout.split()[-1])
    assert folder.is_relative_to(tmp_path)
    assert sorted(p.name for p in folder.glob("*.h.gch")) == names


def _build_into(built):
    """A `compiled_entry` build that writes a file into its folder and notes the folder."""
    def build(folder):
        built.append(folder)
        pathlib.Path(folder, "kernel.cubin").write_text("kernel")
        return ("built in", folder), True
    return build


def _load(folder):
    assert (pathlib.Path(folder) / "kernel.cubin").read_text() == "kernel"
    return ("loaded from", folder)


def test_an_entry_built_in_place_is_built_and_sealed_in_its_own_folder(empty_cache):
    """In place (code that names its files by absolute path, as Inductor's C++ wrapper on CUDA
    names its cubins), the build writes into the entry's final folder, not into one renamed
    afterwards; later calls load it from there."""
    built = []
    entry = str(empty_cache / "compiled" / "key")
    assert compiled_entry("key", _build_into(built), _load, in_place=True) == \
        (("built in", entry), False)
    assert built == [entry] and (empty_cache / "compiled" / "key" / MANIFEST).is_file()
    assert compiled_entry("key", _build_into(built), _load, in_place=True) == \
        (("loaded from", entry), True)
    assert built == [entry]
    assert [p.name for p in (empty_cache / "compiled").iterdir() if p.name.startswith(".")] == []


def test_an_entry_half_built_in_place_is_rebuilt_there(empty_cache):
    """A process that died while building in place leaves the entry without its manifest
    (written last): the next one says so and builds it again in the same folder."""
    half = empty_cache / "compiled" / "key"
    half.mkdir(parents=True)
    (half / "kernel.cubin").write_text("half")
    built = []
    with pytest.warns(CacheWarning, match="damaged \\(no readable manifest"):
        assert compiled_entry("key", _build_into(built), _load, in_place=True) == \
            (("built in", str(half)), False)
    assert built == [str(half)] and (half / "kernel.cubin").read_text() == "kernel"
    assert (half / MANIFEST).is_file()


_BUILD_IN_PLACE = """
import pathlib, sys, time
from inference.mcmc.cache import compiled_entry
def build(folder):
    with open(sys.argv[1], "a") as log:
        log.write(folder + "\\n")
    time.sleep(3)
    pathlib.Path(folder, "kernel.cubin").write_text("kernel")
    return "built", True
print(compiled_entry("key", build, lambda folder: "loaded", in_place=True)[0])
"""


def test_two_processes_building_one_entry_in_place_build_it_once(empty_cache, tmp_path):
    """Building in place takes a lock: a second process asking for the same entry waits for
    the first and loads what it built, instead of building into the same folder."""
    log = tmp_path / "builds.log"
    runs = [subprocess.Popen([sys.executable, "-c", _BUILD_IN_PLACE, str(log)], cwd=ROOT,
                             stdout=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = sorted(run.communicate(timeout=120)[0].split() for run in runs)
    assert outputs == [["built"], ["loaded"]]
    assert log.read_text().splitlines() == [str(empty_cache / "compiled" / "key")]


def test_where_no_lock_can_be_taken_an_entry_is_built_beside_and_renamed(empty_cache,
                                                                          monkeypatch):
    """A file system without locks (some network ones) makes `in_place` build as without it
    (in a new folder renamed into place), not fail the compile."""
    from inference.mcmc import cache

    def no_locks(file, operation):
        raise OSError(errno.ENOLCK, "No locks available")
    monkeypatch.setattr(cache.fcntl, "flock", no_locks)
    built = []
    function, loaded = compiled_entry("key", _build_into(built), _load, in_place=True)
    assert not loaded and built and built[0] != str(empty_cache / "compiled" / "key")
    assert (empty_cache / "compiled" / "key" / MANIFEST).is_file()
