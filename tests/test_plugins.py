"""Estimators, tasks and experiments from another installed package, or from a module named
on the command line, reach `gvbench list`, sweeps and the asv suite."""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from gvbench import plugins, tasks
from gvbench.tasks import Toy

PLUGIN = '''
import torch
import gvbench.estimators as E
from gvbench.estimators import register
from gvbench.tasks import Toy


@register(unbiased=False, label="ST-GS½")
def st_gumbel_softmax_half(logits, tau=1.0, *, dim=-1, generator=None):
    """ST-GS at half the temperature (a user's variant)."""
    return E.st_gumbel_softmax(logits, tau / 2, dim=dim, generator=generator)


class Wider(Toy):
    name = "wider"

    def __init__(self):
        super().__init__(n=5, theta=[0.1, -0.4, 0.3, 0.0, 0.2])
'''


def install(site: Path) -> None:
    """What pip leaves in site-packages: the package and its dist-info with entry points."""
    (site / "gvbench_plugin_demo").mkdir(parents=True)
    (site / "gvbench_plugin_demo" / "__init__.py").write_text(PLUGIN)
    info = site / "gvbench_plugin_demo-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: gvbench-plugin-demo\nVersion: 0.1\n"
    )
    (info / "entry_points.txt").write_text(
        "[gvbench.estimators]\ndemo = gvbench_plugin_demo\n\n"
        "[gvbench.tasks]\nwider = gvbench_plugin_demo:Wider\ntoy = gvbench_plugin_demo:Wider\n"
    )


def run(args: list[str], site: Path, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), *sys.path])}
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    site = tmp_path_factory.mktemp("site")
    install(site)
    return site


def test_an_installed_plugin_is_listed_and_swept(site, tmp_path):
    listed = run([sys.executable, "-m", "gvbench.cli", "list"], site, tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert "st_gumbel_softmax_half" in listed.stdout and "wider" in listed.stdout
    out = tmp_path / "wider.nc"
    swept = run(
        [
            sys.executable,
            "-m",
            "gvbench.cli",
            "sweep",
            "wider",
            "--estimators",
            "st_gumbel_softmax_half",
            "st_gumbel_softmax",
            "--tau",
            "1",
            "--k",
            "1",
            "--reps",
            "200",
            "--no-progress",
            "--out",
            str(out),
        ],
        site,
        tmp_path,
    )
    assert swept.returncode == 0, swept.stderr
    check = run(
        [
            sys.executable,
            "-c",
            "import gvbench.harness as h, sys; ds = h.read(sys.argv[1]); "
            "print(list(ds.estimator.values), list(ds.label.values), ds.attrs['task'])",
            str(out),
        ],
        site,
        tmp_path,
    )
    assert "st_gumbel_softmax_half" in check.stdout and "ST-GS½" in check.stdout, check.stderr
    assert "wider" in check.stdout


def test_a_plugin_task_named_like_a_built_in_one_is_left_out_with_one_line(site, tmp_path):
    listed = run([sys.executable, "-m", "gvbench.cli", "list"], site, tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert listed.stderr.splitlines() == [
        "warning: gvbench plugin task 'toy' (gvbench_plugin_demo:Wider) is not used: 'toy' is "
        "already a task; register it under another name"
    ]
    shown = run(
        [
            sys.executable,
            "-c",
            "import gvbench.plugins as p, gvbench.tasks as t; p.load(); "
            "print(t.available()['toy'].__module__, 'wider' in t.TASKS)",
        ],
        site,
        tmp_path,
    )
    assert shown.stdout.split() == [Toy.__module__, "False"]  # plugins write no table


class Wider(Toy):
    """A plugin's task."""

    def __init__(self) -> None:
        super().__init__(n=5, theta=[0.1, -0.4, 0.3, 0.0, 0.2])


class Study:
    """An experiment as its entry point gives it: its ``task`` is a task factory."""

    def task(self) -> Wider:
        return Wider()


STUDY = Study()
NO_TASK = object()  # an experiment that gives no task (a study of sweeps only)


@pytest.fixture
def installed(monkeypatch):
    """Install entry points, ``group → {name: "module:attribute"}``, in a fresh process's
    view: nothing found or refused yet."""

    def install(groups: dict[str, dict[str, str]]) -> None:
        def entry_points(*, group: str) -> list[importlib.metadata.EntryPoint]:
            found = groups.get(group, {}).items()
            return [importlib.metadata.EntryPoint(name, value, group) for name, value in found]

        monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)
        monkeypatch.setattr(plugins, "_found", {})
        monkeypatch.setattr(tasks, "_refused", set())

    return install


def test_found_loads_each_entry_point_once_and_names_a_broken_one(installed):
    installed(
        {plugins.TASKS: {"wider": f"{__name__}:Wider", "broken": "no_such_plugin_module:Task"}}
    )
    with pytest.warns(UserWarning) as said:
        first = plugins.found(plugins.TASKS)
    assert [str(w.message) for w in said] == [
        "gvbench plugin 'broken' (no_such_plugin_module:Task) failed to load: "
        "ModuleNotFoundError: No module named 'no_such_plugin_module'"
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # loaded once: the broken one is not said again
        again = plugins.found(plugins.TASKS)
    assert first == again == {"wider": Wider}
    assert plugins.found(plugins.EXPERIMENTS) == {}


def test_tasks_come_from_plugins_and_experiments_and_no_plugin_writes_tasks(installed, monkeypatch):
    installed(
        {
            plugins.TASKS: {"wider": f"{__name__}:Wider", "toy": f"{__name__}:Wider"},
            plugins.EXPERIMENTS: {"study": f"{__name__}:STUDY", "sweeps": f"{__name__}:NO_TASK"},
        }
    )
    before = dict(tasks.TASKS)
    with pytest.warns(UserWarning, match="plugin task 'toy' .* 'toy' is already a task") as said:
        table = tasks.available()
    assert len(said) == 1
    assert table["toy"] is Toy and table["wider"] is Wider and table["study"] == STUDY.task
    assert "sweeps" not in table and tasks.TASKS == before
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the clash is said once per process
        assert isinstance(tasks.get("study"), Wider)
    monkeypatch.setitem(tasks.TASKS, "mine", Wider)  # what an --import module does
    assert tasks.available()["mine"] is Wider
    with pytest.raises(
        KeyError, match=r"unknown task 'nope'; available: mine, study, subset_toy, toy, wider"
    ):
        tasks.get("nope")


def test_the_asv_suite_sees_an_installed_estimator(site, tmp_path):
    suites = Path(__file__).resolve().parent.parent / "suites"
    probe = run(
        [
            sys.executable,
            "-c",
            "from benchmarks.bench_estimators import Estimators; print(Estimators.params[0])",
        ],
        site,
        suites,
    )
    assert probe.returncode == 0, probe.stderr
    assert "st_gumbel_softmax_half" in probe.stdout


def test_a_module_named_with_import(tmp_path):
    (tmp_path / "my_variants.py").write_text(PLUGIN)
    listed = run(
        [sys.executable, "-m", "gvbench.cli", "--import", "my_variants", "list"], tmp_path, tmp_path
    )
    assert listed.returncode == 0 and "st_gumbel_softmax_half" in listed.stdout, listed.stderr
    missing = run(
        [sys.executable, "-m", "gvbench.cli", "--import", "no_such_module", "list"],
        tmp_path,
        tmp_path,
    )
    assert missing.returncode != 0
    assert "--import no_such_module: no module named 'no_such_module'" in missing.stderr
    assert "Traceback" not in missing.stderr


def gvbench_script() -> str:
    """The installed console script: unlike ``python -m``, it does not put the current folder
    on the path, so finding a module there is ``--import``'s own doing."""
    return str(Path(sys.executable).with_name("gvbench"))


def test_an_imported_module_of_the_current_folder_runs_on_workers(tmp_path):
    (tmp_path / "my_variants.py").write_text(PLUGIN)
    grid = ["--tau", "1", "--k", "1", "--reps", "200", "--no-progress"]
    common = [gvbench_script(), "--import", "my_variants", "sweep", "toy", "--estimators"]
    common += ["st_gumbel_softmax_half", *grid]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    outputs = []
    for name, workers in (("alone.nc", "1"), ("workers.nc", "2")):
        done = subprocess.run(
            [*common, "--workers", workers, "--out", name],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr
        assert "Traceback" not in done.stderr and "warning" not in done.stderr.lower()
        outputs.append(tmp_path / name)
    import xarray as xr

    alone, workers = (xr.load_dataset(path) for path in outputs)
    timed = {n for n in alone.data_vars if "seconds" in n or "time_normalized" in n}
    for name in set(alone.data_vars) - timed - {"digest"}:
        xr.testing.assert_identical(alone[name], workers[name])


def test_an_installed_plugin_runs_on_workers(site, tmp_path):
    swept = run(
        [
            *[sys.executable, "-m", "gvbench.cli", "sweep", "wider", "--estimators"],
            *["st_gumbel_softmax_half", "--tau", "1", "--k", "1", "--reps", "100"],
            *["--no-progress", "--workers", "2", "--out", str(tmp_path / "w.nc")],
        ],
        site,
        tmp_path,
    )
    assert swept.returncode == 0 and "Traceback" not in swept.stderr, swept.stderr
    # The plugin's clashing 'toy' task is said once, by the driver, not by every worker.
    assert swept.stderr.count("warning:") == 1 and "UserWarning" not in swept.stderr


@pytest.mark.parametrize(
    ("source", "says"),
    [
        ("def broken(:\n", "--import bad_module: syntax error in "),
        ("raise RuntimeError('no licence')\n", "raised RuntimeError: no licence"),
        ("import no_such_dependency\n", "no module named 'no_such_dependency'"),
    ],
)
def test_an_import_that_fails_is_one_line(tmp_path, source, says):
    (tmp_path / "bad_module.py").write_text(source)
    done = subprocess.run(
        [gvbench_script(), "--import", "bad_module", "list"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and says in lines[0] and lines[0].startswith("gvbench: "), done.stderr


LOCAL_CODE = {
    # A package of the user's folder, whose modules import each other and a sibling file.
    "my_lab/__init__.py": "from my_lab import estimators  # noqa: F401\n",
    "my_lab/estimators.py": (
        "import gvbench.estimators as E\n"
        "from my_lab.scales import HALF\n"
        "from gvbench.estimators import register\n\n\n"
        "@register(unbiased=False)\n"
        "def st_gumbel_softmax_scaled(logits, tau=1.0, *, dim=-1, generator=None):\n"
        "    return E.st_gumbel_softmax(logits, tau * HALF, dim=dim, generator=generator)\n"
    ),
    "my_lab/scales.py": "from lab_constants import ONE\n\nHALF = ONE / 2\n",
    "lab_constants.py": "ONE = 1.0\n",
    # A one-file module that imports a sibling file.
    "solo.py": (
        "import gvbench.estimators as E\n"
        "from lab_constants import ONE\n"
        "from gvbench.estimators import register\n\n\n"
        "@register(unbiased=False)\n"
        "def st_gumbel_softmax_solo(logits, tau=1.0, *, dim=-1, generator=None):\n"
        "    return E.st_gumbel_softmax(logits, tau * ONE, dim=dim, generator=generator)\n"
    ),
    # A module that imports one found through the driver's PYTHONPATH, below its folder.
    "uses_src.py": (
        "import gvbench.estimators as E\n"
        "from src_helper import ONE\n"
        "from gvbench.estimators import register\n\n\n"
        "@register(unbiased=False)\n"
        "def st_gumbel_softmax_src(logits, tau=1.0, *, dim=-1, generator=None):\n"
        "    return E.st_gumbel_softmax(logits, tau * ONE, dim=dim, generator=generator)\n"
    ),
    "src/src_helper.py": "ONE = 1.0\n",
    # Installed where the driver runs, not where the worker does.
    "site-packages/driver_only.py": "VALUE = 1\n",
    "needs_a_dependency.py": "import driver_only  # noqa: F401\n",
}

DRIVER_SIDE = """
import pickle, sys
from gvbench import plugins
for name in sys.argv[2:]:
    plugins.import_module(name)
with open(sys.argv[1], "wb") as file:
    pickle.dump(plugins.requirements(), file)
"""

WORKER_SIDE = """
import pickle, sys
import torch
import gvbench.estimators as E
from gvbench import plugins
with open(sys.argv[1], "rb") as file:
    required = pickle.load(file)
try:
    plugins.ensure(required)
except ModuleNotFoundError as error:
    print("missing", error.name)
    raise SystemExit(0)
logits = torch.tensor([[0.3, -0.2, 0.1]] * 4, requires_grad=True)
for name in sys.argv[2:]:
    estimator = E.get(name, tau=0.5)
    generator = torch.Generator().manual_seed(0)
    surrogate = estimator(lambda sample: sample(logits) @ torch.arange(3.0), generator=generator)
    surrogate.mean().backward()
    print(name, logits.grad.tolist())
    logits.grad = None
"""


def sent_by_a_driver(tmp_path: Path, modules: list[str]) -> tuple[Path, Path, dict]:
    """The user's folder, the requirements a driver there sends after ``--import`` of
    ``modules`` (pickled as Dask would), and an environment without the driver's paths."""
    user = tmp_path / "user"
    for relative, source in LOCAL_CODE.items():
        (user / relative).parent.mkdir(parents=True, exist_ok=True)
        (user / relative).write_text(source)
    sent = tmp_path / "required.pickle"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    driver_path = os.pathsep.join([str(user / "site-packages"), str(user / "src")])
    done = subprocess.run(
        [sys.executable, "-c", DRIVER_SIDE, str(sent), *modules],
        cwd=user, env={**env, "PYTHONPATH": driver_path},
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return user, sent, env


def on_a_worker(cwd: Path, sent: Path, env: dict, estimators: list[str]) -> str:
    """What a worker in ``cwd`` prints after importing what was sent: each estimator's
    gradient on fixed logits and noise, or the module it lacks."""
    cwd.mkdir(exist_ok=True)
    done = subprocess.run(
        [sys.executable, "-c", WORKER_SIDE, str(sent), *estimators],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.parametrize(
    ("modules", "estimators"),
    [
        (["my_lab"], ["st_gumbel_softmax_scaled"]),
        (["solo"], ["st_gumbel_softmax_solo"]),
        (["uses_src"], ["st_gumbel_softmax_src"]),
    ],
)
def test_an_imported_package_or_module_reaches_a_worker_without_its_folder(
    tmp_path, modules, estimators
):
    """A worker of a cluster gvbench did not start shares no folder with the driver: it
    imports the --import module's local code (a package, the sibling files a module imports,
    a module found through the driver's own path) from what the driver sends, and computes
    what the driver's folder computes."""
    user, sent, env = sent_by_a_driver(tmp_path, modules)
    elsewhere = on_a_worker(tmp_path / "worker", sent, env, estimators)
    at_home = on_a_worker(user, sent, env, estimators)
    assert elsewhere == at_home and all(e in elsewhere for e in estimators), elsewhere


def test_a_dependency_a_worker_lacks_is_named_not_masked(tmp_path):
    """The driver sends its own folder's code, not the packages it has installed: a worker
    without one says which module it lacks."""
    _, sent, env = sent_by_a_driver(tmp_path, ["needs_a_dependency"])
    assert on_a_worker(tmp_path / "worker", sent, env, []).strip() == "missing driver_only"
