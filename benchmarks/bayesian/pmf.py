"""PMF part: `models.bayesian.pmf` (Bayesian PMF by HMC within Gibbs) beside scikit-surprise.

On the five MovieLens 100K splits u1-u5 (80/20, disjoint test sets), test RMSE of
ours (posterior-mean ratings, clipped to [1, 5]) and of surprise's `SVD` and
`BaselineOnly` with their default settings (their predictions are clipped to
[1, 5] too), fitted on the same training files in the same run. Per split, ours
minus the peer; mean +- standard error over the splits. Published: surprise's
documented 5-fold figures on ML-100K (random folds, not u1-u5).

    python -m benchmarks.bayesian_zoo --parts pmf [--quick]

Our runs write `runs/bayesian_zoo/pmf[_quick]/u<K>/metrics.json`; a split whose file
exists with the same settings is read back, not rerun, so the splits can be run
beforehand in parallel from the command line (`python -m models.bayesian.pmf --split K
--out runs/bayesian_zoo/pmf/uK --no-progress` with the settings below).
"""
import json
import math
import time
from pathlib import Path

import numpy as np

from models.bayesian import pmf
from models.data.movielens import N_SPLITS
from models.data.paths import dataset_dir

PUBLISHED = {"SVD": 0.934, "BaselineOnly": 0.944}
SOURCE = ("scikit-surprise documentation, benchmark table (ML-100k, 5-fold cross-validation, "
          "default parameters)")


def surprise_rmse(algorithm, split):
    """Test RMSE of surprise's `algorithm` ("SVD" / "BaselineOnly") on split u<split>."""
    import surprise
    folder = dataset_dir("movielens-100k")
    data = surprise.Dataset.load_from_folds(
        [(str(folder / f"u{split}.base"), str(folder / f"u{split}.test"))],
        reader=surprise.Reader("ml-100k"))
    trainset, testset = next(surprise.model_selection.PredefinedKFold().split(data))
    model = getattr(surprise, algorithm)(**({"random_state": split} if algorithm == "SVD"
                                            else {"verbose": False}))
    model.fit(trainset)
    return surprise.accuracy.rmse(model.test(testset), verbose=False)


def _mean_se(values):
    values = np.asarray(values, dtype=float)
    se = values.std(ddof=1) / math.sqrt(len(values)) if len(values) > 1 else None
    return float(values.mean()), se


QUICK = {"epochs": 30, "burn_in": 10, "n_kept": 20}
FULL = {"epochs": 150, "burn_in": 50, "n_kept": 100}


def _ours(split, settings, out):
    """Our metrics on one split: read back from `out`/metrics.json when it was made with
    `settings`, else run now."""
    path = out / "metrics.json"
    if path.is_file():
        metrics = json.loads(path.read_text())
        if all(metrics["budget"].get(k) == v for k, v in settings.items()):
            return metrics
    return pmf.main(["--split", str(split), "--epochs", str(settings["epochs"]), "--burn-in",
                     str(settings["burn_in"]), "--n-samples", str(settings["n_kept"]),
                     "--out", str(out), "--no-progress"])


def run(quick, root):
    splits = [1] if quick else list(range(1, N_SPLITS + 1))
    settings = QUICK if quick else FULL
    out = Path(root) / "runs" / "bayesian_zoo" / ("pmf_quick" if quick else "pmf")
    ours = {}
    for split in splits:
        metrics = _ours(split, settings, out / f"u{split}")
        ours[split] = (metrics["test_rmse"], metrics["budget"]["cpu_seconds"])
    ours_rmse = [ours[s][0] for s in splits]
    ours_cpu = sum(ours[s][1] for s in splits)
    rows = []
    for algorithm in ("SVD", "BaselineOnly"):
        started = time.process_time()
        peer = [surprise_rmse(algorithm, s) for s in splits]
        peer_cpu = time.process_time() - started
        mean, se = _mean_se(ours_rmse)
        peer_mean, peer_se = _mean_se(peer)
        diff, diff_se = _mean_se(np.subtract(ours_rmse, peer))
        budget = (f"{settings['epochs']} sweeps ({settings['burn_in']} burn-in, "
                  f"{settings['n_kept']} kept), 20 leapfrogs each, 10 factors")
        rows.append({
            "model": "pmf", "data": "movielens-100k " + ",".join(f"u{s}" for s in splits),
            "metric": "test_rmse", "ours": mean, "ours_se": se,
            "published": PUBLISHED[algorithm], "published_se": None,
            "published_source": f"surprise {algorithm}: {SOURCE}",
            "peer": f"scikit-surprise {algorithm}", "peer_value": peer_mean, "peer_se": peer_se,
            "ours_seconds": ours_cpu, "peer_seconds": peer_cpu,
            "note": (f"ours minus {algorithm} per split: {diff:+.4f}"
                     + (f" +- {diff_se:.4f}" if diff_se is not None else "")
                     + f"; ours: BPMF by HMC within Gibbs, {budget}, posterior-mean "
                     f"predictions clipped to [1, 5]; CPU seconds, one thread"),
            "per_split": {f"u{s}": {"ours": o, "peer": p}
                          for s, o, p in zip(splits, ours_rmse, peer)}})
    return rows
