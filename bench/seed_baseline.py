"""The seed notebook's own code, the baseline of the benchmarks' "x the seed notebook" columns.

The seed script, ``seed_notebook_runnable.py`` (the community notebook re-indented to run as a script), is
not part of the repository: it lives in the project's shared folder, ``shared/seed/`` beside the checkout,
where this module looks by default. Elsewhere, point ``--seed-script PATH`` (or ``FASTSNN_SEED``) at it; a
benchmark that cannot find it says so in one line and leaves the seed's columns out.

Nothing of the seed is copied into fastsnn: this module reads the runnable seed
script, keeps its imports, constants, functions and classes, and drops the
top-level calls (seeding, thread setting) and the statements that train
(everything from ``T0 = time.time()`` on). Its globals
(``ANF_PER_EAR``, ``NUM_HIDDEN``, ``batch_size``, ...) can be reassigned on the
returned module before calling its functions.
"""

from __future__ import annotations

import argparse
import ast
import os
import sys
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PATH = ROOT.parent / "shared" / "seed" / "seed_notebook_runnable.py"
SEED_PATH = Path(os.environ.get("FASTSNN_SEED", DEFAULT_PATH))


def available() -> bool:
    return SEED_PATH.is_file()


def add_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seed-script", type=Path, default=None, metavar="PATH",
                   help="the seed notebook's runnable script, seed_notebook_runnable.py, the baseline of the 'x the "
                        f"seed notebook' columns (default: $FASTSNN_SEED, else {DEFAULT_PATH}; bench/README.md)")


def use(p: argparse.ArgumentParser, path: Path | None, left_out: str) -> bool:
    """Take the seed script from ``--seed-script`` ``path`` when given (``p.error`` if it is not a file). True
    when the script is there; otherwise prints one line saying that ``left_out`` is left out and why."""
    global SEED_PATH
    if path is not None:
        if not path.is_file():
            p.error(f"--seed-script {path}: no such file")
        SEED_PATH = path
    if available():
        return True
    print(f"no seed notebook script at {SEED_PATH}: {left_out} left out. It is not in the repository; pass "
          "--seed-script PATH or set FASTSNN_SEED to seed_notebook_runnable.py (bench/README.md says where it is)",
          file=sys.stderr)
    return False


def load(**overrides) -> types.ModuleType:
    """The seed's definitions as a module; ``overrides`` reassign its globals (e.g. NUM_HIDDEN=1000)."""
    if not available():
        raise FileNotFoundError(f"seed script not found at {SEED_PATH}; set FASTSNN_SEED to its path")
    tree = ast.parse(SEED_PATH.read_text())
    kept = []
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "T0" for t in node.targets):
            break
        if isinstance(node, (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.ClassDef, ast.Assign)):
            kept.append(node)
    module = types.ModuleType("seed_notebook")
    exec(compile(ast.Module(body=kept, type_ignores=[]), str(SEED_PATH), "exec"), module.__dict__)
    for name, value in overrides.items():
        if not hasattr(module, name):
            raise AttributeError(f"the seed has no global {name!r}")
        setattr(module, name, value)
    if "ANF_PER_EAR" in overrides:
        module.INPUT_SIZE = 2 * module.ANF_PER_EAR
    return module
