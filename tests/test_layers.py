"""The package's layers point down (import-linter's contracts in pyproject.toml), its import
graph has no cycle and its function-local imports stay within their ceilings, each with a reason
(tools/import_graph.py, read from the code with ``ast``)."""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _import_graph():
    spec = importlib.util.spec_from_file_location("import_graph", ROOT / "tools" / "import_graph.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(importlib.util.find_spec("importlinter") is None, reason="import-linter is in the [dev] extra")
def test_import_contracts_are_kept():
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    code = "import sys; from importlinter.cli import lint_imports; sys.exit(lint_imports(no_logo=True, no_cache=True))"
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr


def test_no_import_cycle_and_no_upward_import():
    figures = _import_graph().measure(ROOT / "src")
    assert figures["cycle_members"] == []
    assert figures["upward"] == []


def test_function_local_imports_stay_few_and_say_why():
    """Each import inside a function carries a comment saying why (--help speed, a slow optional
    path), and their number stays within the ceilings in pyproject.toml."""
    graph = _import_graph()
    figures = graph.measure(ROOT / "src")
    ceilings = graph.read_ceilings()
    assert figures["local_without_reason"] == []
    for key in ("function_local_imports", "function_local_imports_outside_cli"):
        assert figures[key] <= ceilings[key], (key, figures["local"])


def test_import_graph_sees_a_cycle_and_an_upward_import(tmp_path):
    pkg = tmp_path / "rnnlab"
    (pkg / "data").mkdir(parents=True)
    (pkg / "tasks").mkdir()
    for init in (pkg / "__init__.py", pkg / "data" / "__init__.py", pkg / "tasks" / "__init__.py"):
        init.write_text("")
    (pkg / "data" / "a.py").write_text("def f():\n    from rnnlab.tasks.b import g\n")
    (pkg / "tasks" / "b.py").write_text("from rnnlab.data.a import f\n")
    figures = _import_graph().measure(tmp_path)
    assert figures["cycle_members"] == [["rnnlab.data.a", "rnnlab.tasks.b"]]
    assert len(figures["upward"]) == 1 and "rnnlab.data.a -> rnnlab.tasks.b" in figures["upward"][0]
    assert figures["function_local_imports"] == 1
    assert figures["local_without_reason"] == ["rnnlab/data/a.py:2 rnnlab.tasks.b.g"]
    (pkg / "data" / "a.py").write_text("def f():\n    from rnnlab.tasks.b import g  # lazy: a reason\n")
    assert _import_graph().measure(tmp_path)["local_without_reason"] == []


def test_the_architecture_page_lists_the_contract_layers():
    """docs/architecture.md's layer list is the contract's, top to bottom."""
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    block = text.split("```text\n", 1)[1].split("```", 1)[0]
    floors = [tuple(n.strip().split(".", 1)[1] for n in line.split("   ")[0].split("|"))
              for line in block.splitlines() if line.startswith("rnnlab.")]
    assert floors == list(reversed(_import_graph().LAYERS))
