"""The code blocks of a Markdown page (the README, a page of docs/), and how the tests run them.

- A ```` ```python ```` block runs as written, in a fresh interpreter, in a folder of its own.
- The commands of the ```` ```bash ```` blocks run in order, in one fresh folder per page, as a
  newcomer would type them: every `gvbench` command (and `make demo`) at a shrunk size, the
  command otherwise the same; `make test`, `cd` and `asv` are left to their own tests.
- A block fenced with no language (output, configuration, a command that takes hours) or with
  another language is not run: that is how a page opts a block out.

``GVBENCH_README_FULL=1`` runs every command at its written size (tens of minutes on 2 cores);
``GVBENCH_README_TIMES=FOLDER`` writes each page's step times there, as [command, seconds] pairs.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"
PAGES = sorted(path for path in DOCS.rglob("*.md") if "_build" not in path.relative_to(DOCS).parts)

# A fence opens with ``` and its info string (a language, or a MyST directive such as
# {include}) and closes at a line of ``` alone.
FENCED = re.compile(r"^```([^\n`]*)\n(.*?)^```[ \t]*$", flags=re.DOTALL | re.MULTILINE)
FULL = os.environ.get("GVBENCH_README_FULL") == "1"
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


def name(page: Path) -> str:
    """The page as the tests name it: its path from the repository's root."""
    return page.relative_to(ROOT).as_posix()


def blocks(page: Path, language: str) -> list[str]:
    """The page's code blocks fenced with ``language``, in order."""
    return [code for info, code in FENCED.findall(page.read_text()) if info.strip() == language]


def run_python(block: str, folder: Path) -> subprocess.CompletedProcess[str]:
    """One Python block in a fresh interpreter, warnings as errors."""
    return subprocess.run(
        [sys.executable, "-W", "error", "-c", block],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=300,
    )


def shell_commands(block: str) -> list[list[str]]:
    """The commands of a shell block, continuation lines joined and comments dropped."""
    joined = block.replace("\\\n", " ")
    return [shlex.split(line, comments=True) for line in joined.splitlines() if line.strip()]


def as_gvbench_arguments(command: list[str]) -> list[str] | None:
    """The gvbench arguments a page's command runs, shrunk; None for what these tests skip."""
    if command[:2] == ["make", "demo"]:
        arguments = ["demo"]  # what `make demo` runs once set up
    elif not command or command[0] == "make":
        return None  # make test: the suite these tests belong to; make docs: tests/test_docs.py
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


def gvbench_steps(page: Path) -> list[list[str]]:
    """The gvbench arguments of every command of the page's shell blocks, in order."""
    return [
        arguments
        for block in blocks(page, "bash")
        for arguments in map(as_gvbench_arguments, shell_commands(block))
        if arguments is not None
    ]


def run_in_order(page: Path, folder: Path) -> list[list[str]]:
    """Run the page's commands in order in ``folder``, stopping at the first that fails.

    Returns the steps run. Python blocks are not run here: each runs in a folder of its own
    (:func:`run_python`), a stricter test, where earlier blocks' files could hide a missing
    step."""
    (folder / ".venv").symlink_to(Path(sys.prefix), target_is_directory=True)
    (folder / "driver.py").write_text(DRIVER)
    ran, seconds = [], []
    for arguments in gvbench_steps(page):
        step = [sys.executable, str(folder / "driver.py"), *arguments]
        start = time.perf_counter()
        result = subprocess.run(step, cwd=folder, capture_output=True, text=True, timeout=3600)
        seconds.append((" ".join(arguments), round(time.perf_counter() - start, 1)))
        assert result.returncode == 0, (name(page), arguments[-6:], result.stderr[-3000:])
        ran.append(arguments)
    if TIMES:  # how a page's times on 2 cores are measured (with GVBENCH_README_FULL=1)
        record = Path(TIMES) / f"{name(page).replace('/', '-')}.json"
        record.parent.mkdir(parents=True, exist_ok=True)
        record.write_text(json.dumps(seconds, indent=1))
    return ran
