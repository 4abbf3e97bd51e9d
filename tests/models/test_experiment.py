"""`models.experiment`: the command line's checks, resume options, progress and --help."""
import json
import multiprocessing
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from inference import checkpoint
from inference.checkpoint import CheckpointInUseError, CheckpointMismatchError
from models import experiment
from models.latent import vae

ROOT = Path(__file__).resolve().parents[2]
SMALL = ["--batch-size", "128", "--hidden", "16", "--z-dim", "4", "--iw-samples", "5",
         "--test-size", "20", "--seed", "5"]


def _main(monkeypatch, *argv):
    """`python -m models.latent.vae ARGV` on fresh templates (main() trains the module's own)."""
    gen, q_net = vae.new_templates()
    monkeypatch.setattr(vae, "build_gen", gen)
    monkeypatch.setattr(vae, "build_q_net", q_net)
    return vae.main(list(argv))


def test_help_lists_the_runnable_models():
    for argv in (["--help"], []):
        done = subprocess.run([sys.executable, "-m", "models.experiment", *argv], cwd=ROOT,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        for module in ("models.latent.vae", "models.latent.iwae", "models.latent.bernoulli_vae",
                       "models.bayesian.bnn"):
            assert f"python -m {module}" in done.stdout


def test_mean_over_batches_shows_progress_and_refuses_no_rows(capsys):
    images = np.ones((250, 3), dtype=np.float32)
    mean = experiment.mean_over_batches(lambda x: x.sum(1), images, 100, desc="checking")
    assert mean == 3.
    err = capsys.readouterr().err
    assert "checking" in err and "0/3" in err
    experiment.mean_over_batches(lambda x: x.sum(1), images, 100, desc="quiet", progress=False)
    assert "quiet" not in capsys.readouterr().err
    with pytest.raises(ValueError, match="`images` has no rows"):
        experiment.mean_over_batches(lambda x: x.sum(1), images[:0], 100)


def test_the_evaluation_shows_progress(tmp_path, monkeypatch, capsys):
    _main(monkeypatch, *SMALL, "--epochs", "1", "--out", str(tmp_path))
    captured = capsys.readouterr()
    assert "evaluating on 20 test images (log p(x) by IS with 5 samples per image)" \
        in captured.out
    assert "test log-likelihood" in captured.err and "test ELBO" in captured.err
    _main(monkeypatch, *SMALL, "--epochs", "1", "--out", str(tmp_path), "--no-progress")
    assert "test log-likelihood" not in capsys.readouterr().err


def test_test_size_zero_is_refused_before_training(monkeypatch, capsys):
    with pytest.raises(SystemExit) as exit_:
        _main(monkeypatch, *SMALL, "--epochs", "1", "--test-size", "0")
    assert exit_.value.code == 2
    captured = capsys.readouterr()
    assert "--test-size: expected a positive int, got 0" in captured.err
    assert "Epoch" not in captured.out


def test_resume_with_a_smaller_lr_uses_it_and_says_so(tmp_path, monkeypatch):
    path = str(tmp_path / "vae.pt")
    _main(monkeypatch, *SMALL, "--epochs", "1", "--out", str(tmp_path), "--no-progress",
          "--checkpoint", path)
    with pytest.warns(UserWarning, match=r"with the optimizer settings given now: lr 0\.0001 "
                                         r"\(the checkpoint had 0\.001\)"):
        _main(monkeypatch, *SMALL, "--epochs", "2", "--out", str(tmp_path),
              "--no-progress", "--checkpoint", path, "--lr", "1e-4")
    assert len(json.loads((tmp_path / "run.json").read_text())["history"]) == 2
    saved = checkpoint.load(path)
    assert saved["optimizer"]["param_groups"][0]["lr"] == 1e-4


def test_resume_with_other_model_settings_is_refused(tmp_path, monkeypatch):
    path = str(tmp_path / "vae.pt")
    _main(monkeypatch, *SMALL, "--epochs", "1", "--out", str(tmp_path), "--no-progress",
          "--checkpoint", path)
    with pytest.raises(CheckpointMismatchError) as error:
        _main(monkeypatch, *SMALL, "--epochs", "2", "--out", str(tmp_path), "--no-progress",
              "--checkpoint", path, "--hidden", "8")
    message = str(error.value)
    assert "settings.hidden: [16] in the checkpoint, now [8]" in message
    assert f"delete {path}" in message


def _hold_lock(path, locked, release):
    with checkpoint.writer_lock(path):
        locked.set()
        release.wait(60)


def test_a_second_run_on_the_same_checkpoint_is_refused(tmp_path, monkeypatch):
    path = str(tmp_path / "vae.pt")
    context = multiprocessing.get_context("fork")
    locked, release = context.Event(), context.Event()
    other = context.Process(target=_hold_lock, args=(path, locked, release))
    other.start()
    try:
        assert locked.wait(60)
        with pytest.raises(CheckpointInUseError, match="in use by another run"):
            _main(monkeypatch, *SMALL, "--epochs", "1", "--out", str(tmp_path),
                  "--no-progress", "--checkpoint", path)
    finally:
        release.set()
        other.join(60)
    assert not Path(path).exists()
