"""The default run that the docs show, retrained: docs/figures and the dated numbers quoted beside them.

    python -m bench.docs_figures [--seed 0]      # ~1 minute on 2 cores: train, copy the figures, rewrite the text
    python -m bench.docs_figures --no-train      # rewrite the text from docs/figures/run.json only

Trains ``fastsnn train --seed 0`` (every other setting the seed network's default) in a fresh process into
``runs/docs-figures/default-seed0`` (via bench.whole_run, timed from start to exit), copies its figures
(``FIGURES``) and a record of the run (``run.json``: metrics, wall time, date, CPU, threads, load, commit)
into ``docs/figures/``, and rewrites the sentence between the ``<!-- run: begin -->`` and ``<!-- run: end -->``
markers of the README and docs/results.md from that record (``tests/test_readme.py`` checks they agree). A
run's numbers depend on the seed and the code alone (not on the thread count), so a change in them is a
change in the code: rerun this and commit the result with it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
from pathlib import Path

from .common import ROOT, machine
from .whole_run import fastsnn_run

FIGURES = ("inputs.png", "loss.png", "confusion_test.png", "ipd_hist_test.png")
DOCS = ROOT / "docs"
RECORD = DOCS / "figures" / "run.json"
TEXTS = (ROOT / "README.md", DOCS / "results.md")  # the files that quote the run
BEGIN, END = "<!-- run: begin -->", "<!-- run: end -->"


def _commit() -> str | None:
    """The checkout's commit (short hash, ``+`` when the tree has changes), or None outside git."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("+" if dirty else "")


def train(seed: int) -> dict:
    """Train the default run of ``seed``, copy its figures to docs/figures and return (and save) its record."""
    commit = _commit()
    load = os.getloadavg()[0]
    run = fastsnn_run(seed, "auto", ROOT / "runs" / "docs-figures" / f"default-seed{seed}")
    metrics = json.loads((Path(run["out"]) / "metrics.json").read_text())
    for name in FIGURES:
        shutil.copyfile(Path(run["out"]) / name, RECORD.parent / name)
    info = machine()
    record = {"command": f"fastsnn train --seed {seed}", "date": info["date"], "cpu": info["cpu"],
              "cores": os.cpu_count(), "threads": metrics["threads"], "torch": info["torch"], "commit": commit,
              "load_1min": [load, os.getloadavg()[0]], "wall_s": run["wall_s"],
              **{key: metrics[key] for key in ("test_accuracy", "test_abs_error_deg", "train_accuracy",
                                               "train_abs_error_deg", "epochs", "best_epoch", "stopped_early",
                                               "backend", "fastsnn_version")}}
    RECORD.write_text(json.dumps(record, indent=2) + "\n")
    return record


def sentence(record: dict) -> str:
    """The run as the docs quote it (one paragraph, markdown)."""
    stop = f"stopped early, best epoch {record['best_epoch']}" if record["stopped_early"] else "no early stop"
    return (f"`{record['command']}` ({record['date']}, {record['cpu']}, {record['threads']} threads; "
            f"`python -m bench.docs_figures`): test accuracy {100 * record['test_accuracy']:.1f}% "
            f"({record['test_abs_error_deg']:.1f} deg mean error), train accuracy "
            f"{100 * record['train_accuracy']:.1f}%, {record['epochs']} epochs ({stop}), "
            f"{record['wall_s']:.0f} s from start to exit at a load average of {max(record['load_1min']):.1f} on "
            f"{record['cores']} cores. Its figures are in `docs/figures/`.")


def quoted(text: str) -> str:
    """What ``text`` holds between the markers (ValueError where they are missing)."""
    if BEGIN not in text or END not in text:
        raise ValueError(f"no {BEGIN} ... {END} block")
    return text.split(BEGIN, 1)[1].split(END, 1)[0].strip()


def rewrite(path: Path, record: dict) -> None:
    """Replace the block between the markers of ``path`` with :func:`sentence` of ``record``."""
    text = path.read_text()
    quoted(text)  # both markers are there
    before, rest = text.split(BEGIN, 1)
    path.write_text(f"{before}{BEGIN}\n{sentence(record)}\n{END}{rest.split(END, 1)[1]}")


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-train", action="store_true", help="rewrite the quoted text from docs/figures/run.json")
    args = p.parse_args(argv)
    record = json.loads(RECORD.read_text()) if args.no_train else train(args.seed)
    for path in TEXTS:
        try:
            rewrite(path, record)
        except ValueError as err:
            p.error(f"{path.relative_to(ROOT)}: {err}")
    print(sentence(record))
    print(f"wrote {', '.join(str(path.relative_to(ROOT)) for path in TEXTS)}"
          + ("" if args.no_train else f", docs/figures/{{{','.join(FIGURES)},run.json}}"))
    return record


if __name__ == "__main__":
    main()
