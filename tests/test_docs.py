"""Every ```python block of every docs/*.md page runs as written.

A page may start with a comment naming what its blocks need, e.g.
``<!-- requires: torch, jax -->`` (importable modules; the page's blocks skip without them) and
``<!-- keras-backend: jax -->`` (the blocks run in one fresh process with that Keras backend,
since a process's Keras backend is fixed at its first ``import keras``). Blocks of one page run
in order in one namespace, so a later block may use what an earlier one defined.
"""
import importlib.util
import os
import pathlib
import re
import subprocess
import sys

import pytest

DOCS = pathlib.Path(__file__).resolve().parents[1] / "docs"
PAGES = sorted(DOCS.glob("*.md"))


def _directive(text, name):
    match = re.search(rf"<!--\s*{name}:\s*(.*?)\s*-->", text)
    return [w.strip() for w in match.group(1).split(",") if w.strip()] if match else []


def _blocks(text):
    return re.findall(r"```python\n(.*?)```", text, re.S)


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_docs_page_blocks_run(page):
    text = page.read_text()
    blocks = _blocks(text)
    if not blocks:
        pytest.skip(f"{page.name} has no python blocks")
    for module in _directive(text, "requires"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{page.name} needs {module}, which is not installed")
    backend = _directive(text, "keras-backend")
    if backend:
        source = "\n".join(f"# --- {page.name} block {i}\n{b}" for i, b in enumerate(blocks))
        env = dict(os.environ, KERAS_BACKEND=backend[0])
        proc = subprocess.run([sys.executable, "-c", source], env=env, capture_output=True,
                              text=True, timeout=900)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
        return
    namespace = {"__name__": "docs"}
    for i, block in enumerate(blocks):
        exec(compile(block, f"{page.name} python block {i}", "exec"), namespace)
