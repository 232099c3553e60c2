"""The front door works as written: every Python snippet of the README and every docs/examples script runs,
the README keeps the two commands CI and users run, the numbers quoted for the default run are those of
the committed figures' run, and every relative link of the docs leads somewhere."""

import json
import re
import runpy
from pathlib import Path

import pytest

from bench import docs_figures

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
EXAMPLES = sorted((ROOT / "docs" / "examples").glob("*.py"))
DOCS = [README, ROOT / "bench" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def python_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```$", text, re.M | re.S)


BLOCKS = python_blocks(README.read_text())


def test_the_readme_has_python_snippets_and_examples():
    assert len(BLOCKS) >= 3 and len(EXAMPLES) >= 3


@pytest.mark.parametrize("code", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_readme_snippet_runs_as_written(code, tmp_path, monkeypatch):
    """Each block alone, in a fresh namespace: it defines every name it uses (runs/ lands in tmp_path)."""
    monkeypatch.chdir(tmp_path)
    exec(compile(code, str(README), "exec"), {"__name__": "__main__"})


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_runs(path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    runpy.run_path(str(path), run_name="__main__")


def test_the_readme_keeps_its_two_commands():
    text = README.read_text()
    assert "\npip install torch==2.13.0 && pip install -e . && fastsnn train\n" in text
    assert ('\npip install torch==2.13.0 && echo torch==2.13.0 > /tmp/pin.txt && pip install -c /tmp/pin.txt -e '
            '".[test,ray,compat]" && python -m pytest -q\n') in text


def test_the_quoted_default_run_is_the_committed_figures_run():
    record = json.loads(docs_figures.RECORD.read_text())
    for path in docs_figures.TEXTS:
        assert docs_figures.quoted(path.read_text()) == docs_figures.sentence(record), path
    for name in docs_figures.FIGURES:
        assert (docs_figures.RECORD.parent / name).is_file(), name


def _anchors(path: Path) -> set[str]:
    """GitHub's ids of the markdown headings of ``path``."""
    headings = re.findall(r"^#+ (.+)$", re.sub(r"^```.*?^```$", "", path.read_text(), flags=re.M | re.S), re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


@pytest.mark.parametrize("doc", DOCS, ids=[str(p.relative_to(ROOT)) for p in DOCS])
def test_relative_links_lead_somewhere(doc):
    for target in re.findall(r"\]\(([^)\s]+)\)", doc.read_text()):
        if re.match(r"[a-z]+://", target):
            continue
        file, _, anchor = target.partition("#")
        path = (doc.parent / file).resolve() if file else doc
        assert path.exists(), f"{doc.name}: {target}"
        if anchor:
            assert anchor in _anchors(path), f"{doc.name}: {target}"
