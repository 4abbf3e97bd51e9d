"""Our compiles keep Inductor's cache under PPL_CACHE_DIR (not /tmp), unless a user chose one."""
import os

import torch
from torch._inductor.runtime.cache_dir_utils import default_cache_dir

from inference.mcmc.cache import cache_root, inductor_cache, inductor_cache_dir
from inference.mcmc.compile import CompiledStep, shifted
from tests.inference.test_compile import needs_compiler


def test_the_cache_root_is_ppl_cache_dir_else_the_users_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("PPL_CACHE_DIR", str(tmp_path))
    assert cache_root() == str(tmp_path)
    monkeypatch.delenv("PPL_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root() == str(tmp_path / "xdg" / "ppl")


def test_inductor_cache_dir_keeps_a_users_choice_only(monkeypatch, tmp_path):
    monkeypatch.setenv("PPL_CACHE_DIR", str(tmp_path / "ppl"))
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    assert inductor_cache_dir() == str(tmp_path / "ppl" / "inductor")
    # what Inductor writes into the variable at its first use is not a choice
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", default_cache_dir())
    assert inductor_cache_dir() == str(tmp_path / "ppl" / "inductor")
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "mine"))
    assert inductor_cache_dir() == str(tmp_path / "mine")


def test_inductor_cache_switches_inductor_within_the_block_only(monkeypatch, tmp_path):
    from torch._inductor.runtime.cache_dir_utils import cache_dir
    monkeypatch.setenv("PPL_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    with inductor_cache():
        assert cache_dir() == str(tmp_path / "inductor")
    assert "TORCHINDUCTOR_CACHE_DIR" not in os.environ
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("PPL_CACHE_DIR", str(blocker))
    with inductor_cache():  # cannot be created: Inductor's own cache, no error
        assert not cache_dir().startswith(str(blocker))


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
    written = [f for _, _, files in os.walk(tmp_path / "inductor") for f in files]
    assert any(f.endswith(".so") for f in written), written
    assert any(f.endswith(".gch") for f in written), written  # the precompiled header
    # ... of the wrapper's and the kernels' headers together, so neither is parsed per model
    headers = tmp_path / "inductor" / "precompiled_headers"
    combined = headers / "ppl_cpp_wrapper_and_kernels.h"
    assert "cpp_prefix.h" in combined.read_text()
    precompiled = [p for p in headers.glob("*.h") if p.with_suffix(".h.gch").exists()]
    assert [p.read_text() for p in precompiled] == [f"#include <{combined}>\n"]
