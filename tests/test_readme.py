"""Every Python example in the README runs as written (each in a fresh interpreter)."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)


def test_readme_has_examples():
    assert len(BLOCKS) >= 4


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_example_runs(index, tmp_path):
    result = subprocess.run(
        [sys.executable, "-W", "error", "-c", BLOCKS[index]],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]


def test_readme_starts_with_the_two_commands():
    lines = README.read_text().splitlines()
    assert lines[3].startswith("make demo") and lines[4].startswith("make test")


# --- The README as a newcomer reads it: every shell command, in order, in one fresh folder. -

FENCED = re.compile(r"```(\w*)\n(.*?)```", flags=re.DOTALL)
# Set to 1 to run every command at its written size (tens of minutes on 2 cores).
FULL = os.environ.get("GVBENCH_README_FULL") == "1"
# A file to write each step's wall time to, as [command, seconds] pairs.
TIMES = os.environ.get("GVBENCH_README_TIMES")

DRIVER = """
import sys

from gvbench.cli import main

if __name__ == "__main__":  # Dask's worker processes import this file again
    sys.exit(main(sys.argv[1:]))
"""

# Sizes of the shrunk run: each option's value is replaced, the command is the same.
SHRINK = {
    "--reps": "40",
    "--warmup": "20",  # adapting REBAR/RELAX/RODEO for 1000 steps is most of a shrunk cell
    "--steps": "20",
    "--search": "2",
    "--iw-samples": "4",
    "--preset": "tiny",  # every experiment's pipeline at the size that checks it in seconds
}


def shell_commands(block: str) -> list[list[str]]:
    """The commands of a shell block, continuation lines joined and comments dropped."""
    joined = block.replace("\\\n", " ")
    return [shlex.split(line, comments=True) for line in joined.splitlines() if line.strip()]


def as_gvbench_arguments(command: list[str]) -> list[str] | None:
    """The gvbench arguments a README command runs, shrunk; None for what this test skips."""
    if command[:2] == ["make", "demo"]:
        arguments = ["demo"]  # what `make demo` runs once set up
    elif command[:2] == ["make", "test"] or not command:
        return None  # the suite this test belongs to
    elif command[0].endswith("/gvbench"):
        arguments = command[1:]
    else:
        return None  # cd, asv: the suite is run by tests/test_suites.py
    if FULL:
        return arguments
    arguments = list(arguments)
    for option in ("--reps", "--warmup"):
        if arguments[0] in ("sweep", "demo") and option not in arguments:
            arguments += [option, SHRINK[option]]
    for option, value in SHRINK.items():
        if option in arguments:
            arguments[arguments.index(option) + 1] = value
    if arguments[:2] in (["sweep", "listops"], ["sweep", "vae"]):
        # The checkpoint's training, the RLOO reference and K = 100 at B = 200 take minutes.
        arguments[arguments.index("--reps") + 1] = "8"
        arguments += ["--reference-reps", "50"]
        if "--task-option" not in arguments:
            arguments.append("--task-option")
        where = arguments.index("--task-option") + 1
        arguments[where:where] = ["train_steps=10"] + (["hidden=32"] * (arguments[1] == "vae"))
    return arguments


@pytest.mark.slow
def test_the_readme_runs_in_order_in_a_fresh_folder(tmp_path):
    (tmp_path / ".venv").symlink_to(Path(sys.prefix), target_is_directory=True)
    (tmp_path / "driver.py").write_text(DRIVER)
    ran, seconds = [], []
    for language, block in FENCED.findall(README.read_text()):
        if language != "bash":
            # Python blocks run each in a folder of its own (test_readme_example_runs), a
            # stricter test than here, where earlier blocks' files could hide a missing step;
            # the rest are configuration excerpts, a cluster script, the layout.
            continue
        steps = [
            [sys.executable, str(tmp_path / "driver.py"), *arguments]
            for arguments in map(as_gvbench_arguments, shell_commands(block))
            if arguments is not None
        ]
        for step in steps:
            start = time.perf_counter()
            result = subprocess.run(
                step, cwd=tmp_path, capture_output=True, text=True, timeout=3600
            )
            seconds.append((" ".join(step[2:]), round(time.perf_counter() - start, 1)))
            assert result.returncode == 0, (step[-6:], result.stderr[-3000:])
            ran.append(step)
    if TIMES:  # how the README's times on 2 cores are measured (with GVBENCH_README_FULL=1)
        Path(TIMES).write_text(json.dumps(seconds, indent=1))
    assert len(ran) >= 11
    assert (tmp_path / "results" / "toy.nc").exists()  # make demo's file, untouched after
