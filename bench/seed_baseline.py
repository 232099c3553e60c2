"""The seed notebook's own code, loaded from ``shared/seed`` as the baseline of the benchmarks.

Nothing of the seed is copied into fastsnn: this module reads the runnable seed
script, keeps its imports, constants, functions and classes, and drops the
top-level calls (seeding, thread setting) and the statements that train
(everything from ``T0 = time.time()`` on). Its globals
(``ANF_PER_EAR``, ``NUM_HIDDEN``, ``batch_size``, ...) can be reassigned on the
returned module before calling its functions.
"""

from __future__ import annotations

import ast
import os
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SEED_PATH = Path(os.environ.get("FASTSNN_SEED", ROOT.parent / "shared" / "seed" / "seed_notebook_runnable.py"))


def available() -> bool:
    return SEED_PATH.is_file()


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
