"""The package's layers, read from its import statements: the library (CPU runtime and Triton kernels,
then the ops, then the layers) below the experiment; no import runs up a layer or in a circle, the
experiment uses only the library's public names, and every import is a static statement a reader
(and a tool) can follow."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# rank of each part: a module imports only from parts of its own rank or lower
RANKS = {"fastsnn.cpu": 0, "fastsnn.kernels": 0, "fastsnn.ops": 1, "fastsnn.nn": 2, "fastsnn": 3,
         "fastsnn.experiment": 4}
ENTRY_POINTS = {"fastsnn.__main__"}  # `python -m fastsnn`: the program, not the library


def modules() -> dict[str, Path]:
    found = {}
    for base, package in ((ROOT / "fastsnn", "fastsnn"), (ROOT / "kernels", "fastsnn.kernels")):
        for path in base.rglob("*.py"):
            if path.relative_to(base).parts[0] == "kernels":  # a worktree's link to ../kernels, not a package
                continue
            parts = [package, *path.relative_to(base).with_suffix("").parts]
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


MODULES = modules()


def imports(module: str) -> list[tuple[str, str]]:
    """(imported module, imported name or "") for every import statement of ``module``, at any depth."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [(alias.name, "") for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[:len(package.split(".")) - node.level + 1] if node.level else []
            target = ".".join(base + ([node.module] if node.module else []))
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                out.append((sub, "") if sub in MODULES else (target, alias.name))
    return [(m, name) for m, name in out if m == "fastsnn" or m.startswith("fastsnn.")]


def part(module: str) -> str:
    return max((p for p in RANKS if module == p or module.startswith(p + ".")), key=len)


EDGES = {m: sorted({target for target, _ in imports(m)} - {m}) for m in MODULES}


def test_every_module_is_in_a_layer():
    assert {part(m) for m in MODULES} <= set(RANKS)


@pytest.mark.parametrize("module", sorted(set(MODULES) - ENTRY_POINTS))
def test_no_import_runs_up_a_layer(module):
    up = [t for t in EDGES[module] if RANKS[part(t)] > RANKS[part(module)]]
    assert not up, f"{module} ({part(module)}) imports {up} from a higher layer"


def test_the_experiment_uses_only_public_library_names():
    private = [(m, target, name) for m in MODULES if part(m) == "fastsnn.experiment"
               for target, name in imports(m) if part(target) != "fastsnn.experiment"
               and (any(p.startswith("_") for p in target.split(".")) or (name.startswith("_") and not name.endswith("__")))]
    assert not private, private


def test_the_experiment_reaches_the_ops_through_their_front():
    """The experiment imports ``fastsnn.ops`` (or ``fastsnn``), never an op's backend modules: those may change
    with the kernels (the stimulus once took ``popcount`` from ``fastsnn.ops.spikes.simd``)."""
    inside = [(m, target) for m in MODULES if part(m) == "fastsnn.experiment"
              for target, _ in imports(m) if target.startswith("fastsnn.ops.")]
    assert not inside, inside


def test_no_import_runs_in_a_circle():
    state, stack = {}, []

    def visit(m):
        state[m] = "open"
        stack.append(m)
        for t in EDGES[m]:
            if state.get(t) == "open":
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(t):] + [t]))
            if t not in state and t in MODULES:
                visit(t)
        stack.pop()
        state[m] = "done"

    for m in MODULES:
        if m not in state:
            visit(m)


def test_no_import_by_string():
    """Modules reach each other by import statements, not importlib: a tool can follow every call to its kernel."""
    users = [m for m, path in MODULES.items() if "import_module(" in path.read_text()]
    assert not users, users


def test_no_public_name_is_also_a_subpackage():
    """``fastsnn.ops.lif`` was both a function and a folder; ``import fastsnn.ops.lif.cpu`` then failed."""
    import importlib

    packages = [importlib.import_module(m) for m, path in MODULES.items() if path.name == "__init__.py"]
    clashes = [f"{pkg.__name__}.{name}" for pkg in packages for name in getattr(pkg, "__all__", [])
               if f"{pkg.__name__}.{name}" in MODULES and not isinstance(getattr(pkg, name), type(importlib))]
    assert not clashes, clashes


def test_every_import_names_a_module_of_the_package():
    missing = [(m, t) for m, targets in EDGES.items() for t in targets if t not in MODULES]
    assert not missing, missing
