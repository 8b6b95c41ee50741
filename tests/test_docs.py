"""The documentation stays true: the site builds with ``mkdocs build --strict``, its tables match
the JSON they are written from, the README's command-line example runs, and every ``rnnlab``
command shown in README.md and docs/ names a command and flags that exist. (The pages' Python
examples run as doctests: ``--doctest-glob=*.md`` in pyproject.toml.)"""

from __future__ import annotations

import importlib.util
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)


def _blocks(path: Path, languages: tuple[str, ...]) -> list[str]:
    return [body for lang, body in FENCE.findall(path.read_text(encoding="utf-8")) if lang in languages]


INLINE = re.compile(r"`(rnnlab [^`]+)`")


def _commands(path: Path) -> list[tuple[str, bool]]:
    """``rnnlab ...`` lines of the page's bash and console blocks (continuation lines joined), and
    its inline ``rnnlab ...`` code spans, each with whether it is a full command (a block line)."""
    out = [(span, False) for span in INLINE.findall(FENCE.sub("", path.read_text(encoding="utf-8")))]
    for body in _blocks(path, ("bash", "console", "sh")):
        text = body.replace("\\\n", " ")
        for line in text.splitlines():
            line = line.strip().removeprefix("$ ")
            if line.startswith("rnnlab "):
                out.append((line.split("  #")[0].split(" # ")[0], True))
    return out


def _load_tool(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(importlib.util.find_spec("mkdocs") is None, reason="mkdocs is in the [dev] extra")
def test_site_builds_strict(tmp_path):
    run = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(tmp_path / "site")],
                         cwd=ROOT, capture_output=True, text=True, env={**__import__("os").environ, "NO_MKDOCS_2_WARNING": "1"})
    assert run.returncode == 0, run.stdout + run.stderr


def test_tables_match_their_json():
    assert _load_tool("docs_tables").main(["--check"]) == 0


def test_ucr_tables_name_the_machine_of_each_row():
    machines = _load_tool("docs_tables")._ucr_machines
    amd = {"cpu": "AMD EPYC", "cores": 2, "torch": "2.13.0+cpu"}
    rows = [{"set": "GunPoint", "machine": amd, "threads": 1}, {"set": "OSULeaf", "machine": amd, "threads": 1}]
    assert machines(rows) == "Machine: AMD EPYC, 2 cores, 1 torch thread, torch 2.13.0+cpu"
    rows[1] = {"set": "OSULeaf", "machine": {**amd, "cpu": "Intel Xeon"}, "threads": 2}
    assert machines(rows) == ("Machines: AMD EPYC, 2 cores, 1 torch thread, torch 2.13.0+cpu (GunPoint); "
                              "Intel Xeon, 2 cores, 2 torch threads, torch 2.13.0+cpu (OSULeaf)")


def test_every_shown_command_and_flag_exists():
    import typer.main

    from rnnlab.cli.main import app

    root = typer.main.get_command(app)
    checked = 0
    for page in PAGES:
        for line, full in _commands(page):
            words = shlex.split(line)[1:]
            command, path = root, ["rnnlab"]
            while words and hasattr(command, "commands") and words[0] in command.commands:
                command = command.commands[words[0]]
                path.append(words.pop(0))
            if hasattr(command, "commands"):
                # A prose span may name a group (``rnnlab train TASK``, ``rnnlab --debug ...``); a block may not.
                assert not full, f"{page.name}: {line!r}: no such command"
                continue
            if command.context_settings.get("ignore_unknown_options"):
                continue   # e.g. evaluate: the task's own flags are parsed by the task
            known = {opt for p in command.params for opt in (*p.opts, *p.secondary_opts)} | {"--help"}
            for word in words:
                if word.startswith("--"):
                    assert word.split("=")[0] in known, f"{page.name}: {line!r}: {' '.join(path)} has no {word}"
            checked += 1
    assert checked >= 20


def test_readme_command_line_example_runs(tmp_path, monkeypatch):
    from rnnlab.cli import main

    console = [b for b in _blocks(ROOT / "README.md", ("console",))]
    assert len(console) == 1, "README.md: expected one console block (the command-line example)"
    lines = [line.removeprefix("$ ") for line in console[0].splitlines() if line.startswith("$ rnnlab ")]
    assert len(lines) >= 3
    monkeypatch.chdir(tmp_path)
    for line in lines:
        assert main(shlex.split(line)[1:]) == 0, line


def test_docstring_examples_run():
    import doctest
    import importlib
    import importlib.machinery
    import importlib.util
    import pkgutil

    import rnnlab

    failed, tried = [], 0
    for info in pkgutil.walk_packages(rnnlab.__path__, "rnnlab."):
        spec = importlib.util.find_spec(info.name)
        if spec.origin and spec.origin.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES)):
            # the compiled kernels: no docstrings, and importing one the engine passed over as
            # stale would register its operators a second time
            continue
        module = importlib.import_module(info.name)
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS, verbose=False, report=False)
        tried += result.attempted
        if result.failed:
            failed.append(info.name)
    assert not failed, f"docstring examples fail in {failed} (python -m doctest -v src/rnnlab/...)"
    assert tried >= 5
