"""ZhuSuan's Bayesian models on real data, beside the published numbers and peer libraries.

    python -m benchmarks.bayesian_zoo --parts svgp,blr,gmm          # run these parts
    python -m benchmarks.bayesian_zoo --quick                        # every part, small
    python -m benchmarks.bayesian_zoo --from-results                 # assemble the table

Each part is a module `benchmarks/bayesian/<part>.py` (bnn, variational_dropout,
pmf, lntm, svgp, blr, gmm) with `run(quick, root) -> list of rows`; `root` is
the repository root. A part that runs writes its own record,
`benchmarks/results/bayesian_zoo_<part>.json` (`--quick`: `..._<part>_quick.json`),
and every part's rows go into ONE table, `benchmarks/results/bayesian_zoo.json`
(`--out`), printed at the end. With `--from-results` nothing runs: each part's
record is read back (a part without one is skipped, with a message), so the
combined table is assembled from the parts' committed results; a part whose
module is missing is read back the same way.

Row schema (one row per model, data set and metric; extra keys allowed, e.g.
`per_split`):

    model             the models/bayesian module name ("svgp", "bnn-vi", ...)
    data              data set ("bostonHousing", "movielens-100k u1-u5", ...)
    metric            metric name as in metrics.json ("test_rmse", "test_nll", ...)
    ours, ours_se     our value and its standard error (over splits or seeds; None: one run)
    published, published_se, published_source
                      the published number for the same model and data, its s.e., where
                      it is printed (None when there is none)
    peer, peer_value, peer_se
                      the library a user would pick instead ("gpytorch ApproximateGP",
                      "sklearn GaussianMixture", ...), its value from the same run and s.e.
    ours_seconds, peer_seconds
                      seconds (CPU, one thread, unless the note says otherwise) each took
    note              what differs, paired differences, the budget
"""
import argparse
import importlib
import json
import sys
from pathlib import Path

import torch

from benchmarks._report import RESULTS, comma_list, is_quick, write_report

NAME = "bayesian_zoo"
PARTS = ("bnn", "variational_dropout", "pmf", "lntm", "svgp", "blr", "gmm")
ROW_KEYS = ("model", "data", "metric", "ours", "ours_se", "published", "published_se",
            "published_source", "peer", "peer_value", "peer_se", "ours_seconds",
            "peer_seconds", "note")
ROOT = Path(__file__).resolve().parent.parent


def part_record(part, quick):
    """The path of a part's own record."""
    return RESULTS / f"{NAME}_{part}{'_quick' if quick else ''}.json"


def read_rows(path):
    """The rows of a record written by `write_report` (or a bare list of rows)."""
    record = json.loads(Path(path).read_text())
    return record["rows"] if isinstance(record, dict) else record


def check_rows(part, rows):
    """Raise a ValueError naming the part and key when a row lacks a schema key."""
    for i, row in enumerate(rows):
        missing = [key for key in ROW_KEYS if key not in row]
        if missing:
            raise ValueError(f"part {part!r}, row {i}: missing keys {missing} "
                             f"(see benchmarks/bayesian_zoo.py for the row schema)")
    return rows


def _fmt(value, se=None):
    if value is None:
        return "-"
    text = f"{value:.4g}" if isinstance(value, (int, float)) else str(value)
    return text + (f" +- {se:.2g}" if isinstance(se, (int, float)) and se == se else "")


def print_table(rows):
    header = ("model", "data", "metric", "ours", "published", "peer", "peer value",
              "ours s", "peer s")
    lines = [header]
    for r in rows:
        lines.append((r["model"], r["data"], r["metric"], _fmt(r["ours"], r["ours_se"]),
                      _fmt(r["published"], r["published_se"]), str(r["peer"] or "-"),
                      _fmt(r["peer_value"], r["peer_se"]), _fmt(r["ours_seconds"]),
                      _fmt(r["peer_seconds"])))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    for line in lines:
        print("  ".join(cell.ljust(w) for cell, w in zip(line, widths)))


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bayesian_zoo",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--parts", type=comma_list(PARTS, "part"), default=list(PARTS),
                        help=f"comma-separated, some of {','.join(PARTS)} (default: all)")
    parser.add_argument("--quick", action="store_true", help="small runs (also under CI=true)")
    parser.add_argument("--from-results", action="store_true",
                        help="read the parts' committed records back; run nothing")
    parser.add_argument("--out", default=None,
                        help=f"the combined table (default {RESULTS}/{NAME}.json)")
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    quick = is_quick(args.quick)
    torch.set_num_threads(1)
    rows, sources = [], {}
    for part in args.parts:
        record = part_record(part, quick)
        try:
            module = importlib.import_module(f"benchmarks.bayesian.{part}")
        except ModuleNotFoundError as err:
            if err.name != f"benchmarks.bayesian.{part}":
                raise
            module = None
        if (args.from_results or module is None) and record.is_file():
            part_rows, sources[part] = read_rows(record), f"read from {record.name}"
        elif args.from_results or module is None:
            print(f"part {part}: no {record.name} to read back; skipped")
            sources[part] = "missing"
            continue
        else:
            print(f"\n== part {part}", flush=True)
            part_rows = check_rows(part, module.run(quick, ROOT))
            write_report(NAME, __doc__, ["--parts", part] + (["--quick"] if quick else []),
                         part_rows, record, quick, threads=1, part=part)
            sources[part] = "run"
        rows += check_rows(part, part_rows)
    print()
    print_table(rows)
    out = args.out or RESULTS / f"{NAME}{'_quick' if quick else ''}.json"
    return write_report(NAME, __doc__, argv, rows, out, quick, threads=1, sources=sources)


if __name__ == "__main__":
    main()
