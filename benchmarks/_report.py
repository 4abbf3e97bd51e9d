"""What every benchmark script shares: quick mode, the environment, the JSON report.

Each script prints its own table; this module writes the same record for all
of them to `benchmarks/results/<name>.json` (see benchmarks/README.md).
"""
import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results"


def is_quick(flag=False):
    """Quick mode: asked for with --quick, and always under CI=true."""
    return bool(flag) or os.environ.get("CI", "").lower() in ("1", "true", "yes")


def comma_list(choices, noun):
    """An argparse `type`: "a,b" -> ["a", "b"], each one of `choices`, else an error naming
    the unknown `noun`(s) and the choices."""
    def parse(text):
        names = [part.strip() for part in text.split(",") if part.strip()]
        unknown = [name for name in names if name not in choices]
        if not names or unknown:
            raise argparse.ArgumentTypeError(f"unknown {noun}(s) {unknown or text!r}: expected "
                                             f"some of {', '.join(choices)}")
        return names
    return parse


def commit():
    """The short hash of the checked-out commit, or None outside git."""
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def write_report(name, doc, argv, rows, out, quick, threads=None, device="cpu", **sections):
    """Write {benchmark, description, command, environment, rows, **sections} as JSON."""
    report = {"benchmark": name, "description": doc.split("\n")[0],
              "command": f"python -m benchmarks.{name} " + " ".join(
                  sys.argv[1:] if argv is None else argv),
              "environment": {"torch": torch.__version__, "device": device,
                              "threads": threads or torch.get_num_threads(),
                              "commit": commit(), "quick": quick},
              **sections, "rows": rows}
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w") as f:
        json.dump(report, f, indent=2, default=float)
    print(f"\nwrote {out}")
    return report
