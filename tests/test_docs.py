"""The docs stay true: every relative link resolves and every Python sample runs.

A ```python block in README.md or docs/*.md is executed (each file's blocks in order, sharing one
namespace, in a temporary working directory). A block preceded by the line `<!-- no-run -->`
is only compiled (for samples that need a GPU, a cluster or a long run).
"""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"(<!-- no-run -->\n)?```python\n(.*?)```", re.S)
LINK = re.compile(r"\[[^\]]*\]\(([^)#\s]+)(?:#[^)]*)?\)")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_relative_links_resolve(page):
    for target in LINK.findall(page.read_text()):
        if "://" in target or target.startswith("mailto:"):
            continue
        assert (page.parent / target).exists(), f"{page.name} links to missing {target}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_python_samples_run(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "__doc_sample__"}
    for index, (no_run, source) in enumerate(BLOCK.findall(page.read_text())):
        code = compile(source, f"{page.name}[sample {index}]", "exec")
        if not no_run:
            exec(code, namespace)
