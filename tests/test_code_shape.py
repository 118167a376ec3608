"""The package stays readable: no function over 80 lines, no module over 500, and no
experiment named in the core (the CLI, the reproduction, the report, the benchmarks).

A module may run longer only where it is one mathematical object and its docstring says so
(the words "one mathematical object" and why)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "gvbench"
LONGEST_FUNCTION, LONGEST_MODULE = 80, 500


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_no_function_is_longer_than_80_lines():
    long = []
    for path in _modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1
                if lines > LONGEST_FUNCTION:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({lines})")
    assert not long, "functions over 80 lines:\n" + "\n".join(long)


def test_no_module_is_longer_than_500_lines_unless_it_says_why():
    long = []
    for path in _modules():
        text = path.read_text()
        lines = text.count("\n")
        docstring = ast.get_docstring(ast.parse(text)) or ""
        if lines > LONGEST_MODULE and "one mathematical object" not in docstring:
            long.append(f"{path.relative_to(ROOT)} ({lines})")
    assert not long, "modules over 500 lines:\n" + "\n".join(long)


def _code_without_strings(source: str) -> str:
    """The source with its string literals and comments blanked: docstrings, help texts
    and examples may name an experiment, the code may not."""
    tree = ast.parse(source)
    lines = source.splitlines()
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            for number in range(node.lineno - 1, node.end_lineno):
                lines[number] = ""
    return "\n".join(re.sub(r"#.*", "", line) for line in lines)


def test_the_core_names_no_experiment():
    core = [
        *(PACKAGE / "cli").rglob("*.py"),
        PACKAGE / "reproduce.py",
        *(PACKAGE / "report").rglob("*.py"),
        *(PACKAGE / "leaderboard").rglob("*.py"),
        *(PACKAGE / "harness").rglob("*.py"),
        *(PACKAGE / "training").rglob("*.py"),
        *(PACKAGE / "tasks").rglob("*.py"),
        PACKAGE / "study.py",
        PACKAGE / "experiment.py",
        *(ROOT / "suites" / "benchmarks").rglob("*.py"),
    ]
    named = []
    for path in core:
        code = _code_without_strings(path.read_text())
        for number, line in enumerate(code.splitlines(), 1):
            if re.search(
                r"listops|vae|ListOps|LISTOPS|VAE_EXPERIMENT|poly|mnist_addition|toy_study|experiments\.",
                line,
            ):
                named.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not named, "the core names an experiment:\n" + "\n".join(named)
