"""Nothing foreign or damaged is trusted, and every bad input or fault is one line naming the
argument or the file and what to do (the audit of issue 25, case by case)."""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

import pytest
import torch
from torch import nn

import gvbench
import gvbench.estimators as E
from gvbench import engine
from gvbench.cli import main
from gvbench.listops.experiment import LISTOPS as listops_train
from gvbench.listops.experiment import TrainConfig as ListOpsConfig
from gvbench.path_lock import PathInUseError, PathLock
from gvbench.tasks import ModuleTask, Toy
from gvbench.training import CheckpointError, checkpoint_digest, read_parameters
from gvbench.vae.data import PIXELS, read_amat

TINY = {"max_length": 6, "d_hidden": 4, "steps": 4, "sizes": (40, 8, 8), "eval_every": 2}
TINY |= {"variance_every": 0, "seed": 1}


def one_line(error: BaseException) -> str:
    text = str(error.value if isinstance(error, pytest.ExceptionInfo) else error)
    assert "\n" not in text and "Traceback" not in text, text
    return text


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A finished tiny ListOps run: its folder, configuration and checkpoint bytes."""
    out = tmp_path_factory.mktemp("runs")
    config = ListOpsConfig(**TINY)
    listops_train.train(config, out_dir=out, progress=False)
    checkpoint = out / config.name() / "checkpoint.pt"
    return out, config, checkpoint, checkpoint.read_bytes()


def _nan_and_resealed(saved):
    name = next(iter(saved["params"]))
    saved["params"][name][0] = float("nan")
    saved["digest"] = checkpoint_digest(saved["config"], saved["params"], saved["state"]["step"])


DAMAGE = {
    "garbage": (lambda data: b"not a checkpoint at all", "is damaged"),
    "truncated": (lambda data: data[: len(data) // 3], "is damaged"),
    "empty": (lambda data: b"", "is damaged"),
    "without optimizer": (
        lambda data: _saved(data, lambda s: s.pop("optimizer")),
        "is not a gvbench training checkpoint (no 'optimizer')",
    ),
    "edited parameters": (
        lambda data: _saved(data, lambda s: next(iter(s["params"].values())).mul_(1.1)),
        "does not match its digest",
    ),
    "NaN parameters": (lambda data: _saved(data, _nan_and_resealed), "non-finite parameters"),
    # A checkpoint is data: code planted in it is refused, never run.
    "code planted in it": (lambda data: _planted(data), "is damaged (UnpicklingError"),
    "another run's": (
        lambda data: _saved(data, lambda s: s["config"].update(lr=0.5)),
        "belongs to another run (its configuration differs in lr)",
    ),
}


class _Planted:
    """Unpickled by a full unpickler, it would create the file it names."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


def _planted(data: bytes) -> bytes:
    marker = Path(tempfile.gettempdir()) / f"gvbench-planted-{os.getpid()}"
    return _saved(data, lambda s: s["state"].update(planted=_Planted(marker)))


def _saved(data: bytes, edit) -> bytes:
    import io

    saved = torch.load(io.BytesIO(data), weights_only=False)
    edit(saved)
    buffer = io.BytesIO()
    torch.save(saved, buffer)
    return buffer.getvalue()


@pytest.mark.parametrize("case", list(DAMAGE))
def test_a_bad_checkpoint_is_refused_in_one_line_naming_it(trained, case):
    out, config, checkpoint, data = trained
    damage, says = DAMAGE[case]
    checkpoint.write_bytes(damage(data))
    try:
        with pytest.raises(CheckpointError) as error:
            listops_train.train(config, out_dir=out, progress=False)
    finally:
        checkpoint.write_bytes(data)
    text = one_line(error)
    assert text.startswith(str(checkpoint)) and says in text and "remove it" in text, text
    planted = Path(tempfile.gettempdir()) / f"gvbench-planted-{os.getpid()}"
    ran = planted.exists()
    planted.unlink(missing_ok=True)
    assert not ran, "reading a checkpoint ran code planted in it"


def test_a_bad_best_parameters_checkpoint_is_one_line(tmp_path):
    path = tmp_path / "best.pt"
    path.write_bytes(b"\x80\x04garbage")
    with pytest.raises(CheckpointError, match=r"best\.pt is damaged") as error:
        read_parameters(path)
    one_line(error)
    torch.save({"params": {}}, path)
    with pytest.raises(CheckpointError, match=r"not a run's best-parameters checkpoint"):
        read_parameters(path)
    with pytest.raises(SystemExit, match=r"best\.pt is not a run's best-parameters checkpoint"):
        main(["sweep", "listops", "--task-option", f"checkpoint={path}", "--out", "x.nc"])


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (b"\xff\xfe\x00garbage", "cannot be read"),
        (b"0 1 0\n1 1\n", "cannot be read"),
        (("x " * PIXELS).encode(), "cannot be read"),
        (b"", "holds no images"),
        (b"0 1 0\n", "3 values per line"),
        ((" ".join(["2"] * PIXELS) + "\n").encode(), "values other than 0 and 1"),
    ],
)
def test_a_bad_amat_file_is_one_line(tmp_path, content, says):
    path = tmp_path / "bad.amat"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=says) as error:
        read_amat(path)
    assert one_line(error).startswith(str(path))


def test_a_binary_estimator_for_categorical_latents_is_refused_at_the_door(tmp_path):
    with pytest.raises(SystemExit, match=r"estimator arm is for binary latents .* arity 4"):
        main(["train", "vae", "--estimator", "arm", "--arity", "4", "--out-dir", str(tmp_path)])
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize(
    ("call", "says"),
    [
        (
            lambda: E.st_gumbel_top_k(torch.zeros(2, 4), 5),
            r"size \(items chosen\) must be an integer in \[1, n - 1\] = \[1, 3\] for n = 4 "
            "items, got 5",
        ),
        (lambda: E.subset_rloo(lambda s: s(torch.zeros(2, 4), 0).sum(-1)), "got 0$"),
        (
            lambda: E.get("st_gumbel_top_k")(lambda s: s(torch.zeros(2, 4)).sum(-1)),
            r"st_gumbel_top_k samples k-subsets: call sample\(logits, size\)",
        ),
        (
            lambda: E.subset_reinforce(lambda s: s(torch.zeros(2, 4)).sum(-1)),
            r"called sample\(logits, size\)",
        ),
    ],
)
def test_a_bad_k_subset_is_one_line(call, says):
    with pytest.raises((ValueError, TypeError), match=says) as error:
        call()
    one_line(error)


@pytest.mark.parametrize(
    "name",
    [n for n, i in E.available().items() if i.variable == "categorical" and not i.exact],
)
def test_a_categorical_estimator_given_a_subset_objective_is_one_line(name):
    arity = 2 if E.info(name).binary_only else 4
    logits = torch.zeros(2, 3, arity, requires_grad=True)
    with pytest.raises(TypeError, match=r"takes no size \(got 2\).*k-subset estimator") as error:
        E.get(name)(lambda sample: sample(logits, 2).sum((-1, -2)))
    one_line(error)


def test_a_subset_estimator_for_categorical_choices_is_refused_at_the_door(tmp_path):
    with pytest.raises(SystemExit, match=r"no estimator applies to the toy task: RLOO \(subset\)"):
        main(["sweep", "toy", "--estimators", "subset_rloo", "--out", str(tmp_path / "t.nc")])
    with pytest.raises(SystemExit, match="subset_rloo samples k-subsets; the experiments'"):
        main(["train", "vae", "--estimator", "subset_rloo", "--out-dir", str(tmp_path)])
    assert not any(tmp_path.iterdir())


def test_a_learning_rate_that_overflows_the_model_is_training_diverged(tmp_path):
    config = ListOpsConfig(**{**TINY, "lr": 1e30, "steps": 30})
    with pytest.raises(gvbench.training.TrainingDiverged, match="training diverged at step"):
        listops_train.train(config, out_dir=tmp_path, progress=False)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = nn.Linear(3, 4)
        self.decoder = nn.Linear(4, 1)
        self.register_parameter(
            "count", nn.Parameter(torch.zeros(2, dtype=torch.long), requires_grad=False)
        )

    def forward(self, x, sample):
        z = sample(self.encoder(x).view(len(x), 2, 2))
        return self.decoder(z.flatten(1)).squeeze(-1)


INPUTS = torch.randn(4, 3)


@pytest.mark.parametrize(
    ("options", "error", "says"),
    [
        ({"groups": {"enc": "encoder."}}, TypeError, r"groups\['enc'\] must be a list .*write"),
        ({"groups": {"enc": 3}}, TypeError, r"groups\['enc'\] must be a list of name prefixes"),
        ({"groups": ["encoder."]}, TypeError, "groups must map a group name"),
        ({"parameters": ["count"]}, ValueError, r"parameters \['count'\] are not floating"),
        (
            {"parameters": ["encoder.weight", "encoder.weight"]},
            ValueError,
            "more than once",
        ),
        ({"max_draws_per_pass": 0}, ValueError, "max_draws_per_pass must be an integer >= 1"),
        ({"reference_reps": 1}, ValueError, "reference_reps must be an integer >= 2, got 1"),
        ({"reference_reps": 0}, ValueError, "reference_reps must be an integer >= 2, got 0"),
        ({"reference_reps": -5}, ValueError, "reference_reps must be an integer >= 2"),
        ({"reference_reps": 1.5}, TypeError, r"reference_reps must be an integer >= 2, got 1\.5"),
        ({"reference_reps": "x"}, TypeError, "reference_reps must be an integer >= 2, got 'x'"),
        ({"reference_reps": None}, TypeError, "reference_reps must be an integer >= 2, got None"),
        ({"arity": "x"}, TypeError, "arity must be an integer >= 2, got 'x'"),
        ({"arity": 0}, ValueError, "arity must be an integer >= 2, got 0"),
    ],
)
def test_module_task_options_are_checked_at_the_door(options, error, says):
    with pytest.raises(error, match=says) as raised:
        ModuleTask(Net(), INPUTS, **{"arity": 2, **options})
    one_line(raised)


def test_a_half_precision_module_fed_single_precision_inputs_is_one_line():
    task = ModuleTask(Net().half(), INPUTS, arity=2, batched=True)
    grid = {"estimators": ["st_gumbel_softmax"], "tau": [1.0], "k": [1], "batch_size": [2]}
    with pytest.raises(ValueError, match=r"inputs.0. is float32 but the module.s .* float16"):
        gvbench.sweep(task, reps=8, reference_reps=8, progress=False, **grid)


@pytest.mark.parametrize(
    ("device", "says"), [("meta", "holds shapes but no values"), ("mps", "no mps device")]
)
def test_a_device_that_cannot_run_is_refused_at_the_door(tmp_path, device, says):
    with pytest.raises(SystemExit, match=says):
        main(["sweep", "toy", "--reps", "8", "--device", device, "--out", str(tmp_path / "x.nc")])
    assert not (tmp_path / "x.nc").exists()


def test_an_imported_module_that_exits_is_said_not_obeyed(tmp_path, monkeypatch):
    (tmp_path / "exits_at_import.py").write_text("import sys\nsys.exit(3)\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(SystemExit, match=r"exits_at_import: importing it called sys.exit\(3\)"):
        main(["--import", "exits_at_import", "list"])


def test_a_string_group_would_have_taken_every_parameter():
    task = ModuleTask(Net(), INPUTS, arity=2, groups={"enc": ["encoder."]})
    assert task.parameter_groups() == {"enc": ["encoder.weight", "encoder.bias"]}


def test_a_loss_that_raises_names_the_task():
    def loss(output, x):
        raise RuntimeError("my loss is broken")

    task = ModuleTask(Net(), INPUTS, loss, arity=2, name="mine", reference_reps=20)
    with pytest.raises(RuntimeError, match="my loss is broken") as raised:
        gvbench.sweep(
            task,
            estimators=["st_gumbel_softmax"],
            tau=[1.0],
            k=[1],
            batch_size=[2],
            reps=4,
            progress=False,
        )
    assert any("ModuleTask 'mine'" in note for note in raised.value.__notes__)


@pytest.mark.parametrize(
    "content",
    [
        "[1, 2, 3]",
        json.dumps({"host": "h", "pid": 1, "started": "yesterday"}),
        "garbage",
        "",
        json.dumps({"host": "h", "pid": True, "started": 0}),
        json.dumps({"host": "h", "pid": 1, "started": 1e300}),
    ],
)
def test_a_lock_gvbench_did_not_write_is_named_and_expires(tmp_path, content):
    lock = tmp_path / "toy.nc.lock"
    lock.write_text(content)
    with pytest.raises(PathInUseError, match="is not a lock gvbench can read") as error:
        PathLock(tmp_path / "toy.nc").acquire()
    assert "None" not in one_line(error) and "1970" not in str(error.value)
    old = time.time() - 3600
    os.utime(lock, (old, old))
    with pytest.warns(
        UserWarning, match=r"taking over the lock of a run that is gone \(unreadable"
    ):
        with PathLock(tmp_path / "toy.nc"):
            pass
    assert not lock.exists()


@pytest.mark.parametrize("value", ["garbage", "host:port", ":99999", "a:b:"])
def test_a_bad_dashboard_address_is_one_line(monkeypatch, tmp_path, value):
    monkeypatch.setenv(engine.DASHBOARD_VARIABLE, value)
    with pytest.raises(SystemExit, match=f"GVBENCH_DASHBOARD={value!r}: expected ':PORT'"):
        main(["sweep", "toy", "--workers", "2", "--reps", "10", "--out", str(tmp_path / "x.nc")])


@pytest.mark.parametrize("value", ["8787", ":0", "127.0.0.1:8787"])
def test_good_dashboard_addresses(monkeypatch, value):
    monkeypatch.setenv(engine.DASHBOARD_VARIABLE, value)
    assert engine.dashboard_address().endswith(value.lstrip(":").rpartition(":")[2])


def test_a_sampler_without_dim_is_refused_when_registered():
    def no_dim_sampler(logits, tau=1.0, *, generator=None):
        return logits

    with pytest.raises(TypeError, match="must accept a 'dim' keyword"):
        E.register(unbiased=False)(no_dim_sampler)
    assert "no_dim_sampler" not in E.available()


def test_messages_show_numbers_as_python_writes_them(tmp_path):
    grid = {"estimators": ["st_gumbel_softmax"], "tau": [1.0], "k": [1], "reps": 10}
    gvbench.sweep(Toy(), path=tmp_path / "x.nc", seed=0, progress=False, **grid)
    with pytest.raises(ValueError, match=r"\(seed: 0 vs 1\)") as error:
        gvbench.sweep(Toy(), path=tmp_path / "x.nc", seed=1, progress=False, **grid)
    assert "np." not in str(error.value)


def test_nothing_to_compute_is_said_without_progress_bars(tmp_path, capsys):
    grid = {"estimators": ["st_gumbel_softmax"], "tau": [1.0], "k": [1], "reps": 10}
    for _ in range(2):
        gvbench.sweep(Toy(), path=tmp_path / "x.nc", progress=False, **grid)
    assert "nothing to compute" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("content", "says"),
    [
        ("", "is damaged (not JSON"),
        ("[]", "a JSON list, not an object"),
        (json.dumps({"preset": "small", "provenance": {}}), "'files' is missing"),
        (json.dumps({"preset": "small", "files": {}}), "'provenance' is missing"),
        (json.dumps({"preset": 1, "files": {}, "provenance": {}}), "'preset' is missing"),
        (
            json.dumps({"preset": "small", "files": {"toy": "toy.nc"}, "provenance": {}}),
            "names results that are not in",
        ),
    ],
)
def test_a_damaged_manifest_is_one_line_before_any_figure(tmp_path, content, says):
    (tmp_path / "reproduction.json").write_text(content)
    with pytest.raises(SystemExit) as error:
        main(["report", str(tmp_path)])
    text = one_line(error)
    assert text.startswith(f"gvbench: {tmp_path / 'reproduction.json'}") and says in text, text
    assert not (tmp_path / "figures").exists()


def test_a_batch_larger_than_the_training_set_is_refused(tmp_path):
    config = ListOpsConfig(**{**TINY, "batch_size": 100_000})
    with pytest.raises(ValueError, match="batch_size must be at most the 40 training examples"):
        listops_train.train(config, out_dir=tmp_path, progress=False)
    assert not any(tmp_path.iterdir())


def test_search_with_a_preset_is_refused_not_ignored(tmp_path):
    argv = ["train", "listops", "--search", "2", "--preset", "tiny", "--out-dir", str(tmp_path)]
    with pytest.raises(SystemExit, match="--search and --preset are exclusive") as refused:
        main(argv)
    one_line(refused)


def test_a_bad_amat_folder_is_one_line_from_the_command_line(tmp_path):
    # read_amat's own message used to reach the user inside a 30-line traceback.
    for split in ("train", "valid", "test"):
        (tmp_path / f"binarized_mnist_{split}.amat").write_text("0 1 0\n")
    argv = ["train", "vae", "--data-dir", str(tmp_path), "--steps", "2", "--no-progress"]
    with pytest.raises(SystemExit, match="3 values per line") as refused:
        main([*argv, "--out-dir", str(tmp_path / "out")])
    one_line(refused)


def test_figures_into_a_folder_that_cannot_be_made_are_one_line(tmp_path):
    path = tmp_path / "toy.nc"
    grid = {"estimators": ["st_gumbel_softmax"], "tau": [1.0], "k": [1], "reps": 10}
    gvbench.sweep(Toy(), path=path, progress=False, **grid)
    for extra in ([], ["--frontier"]):
        with pytest.raises(SystemExit, match="Not a directory") as refused:
            main(["plot", *extra, str(path), "--out-dir", str(path / "figures")])
        one_line(refused)


def test_a_manifest_naming_the_wrong_kind_of_sweep_is_one_line(tmp_path):
    gvbench.sweep(
        Toy(), path=tmp_path / "toy.nc", progress=False, estimators=["reinforce"], reps=10
    )
    simplex = ["simplex", "--tau", "0.5", "--k", "10", "--resolution", "3", "--reps", "20"]
    assert main([*simplex, "--out", str(tmp_path / "simplex.nc"), "--no-progress"]) == 0
    assert (tmp_path / "simplex.png").stat().st_size > 0  # one interior point: drawn, no crash
    manifest = {"preset": "tiny", "files": {"toy": "simplex.nc"}, "provenance": {}}
    (tmp_path / "reproduction.json").write_text(json.dumps(manifest))
    with pytest.raises(SystemExit, match=r"files\.toy is a sweep of a grid") as err:
        main(["report", str(tmp_path)])
    one_line(err)


def test_a_full_disk_leaves_no_lock_and_an_abandoned_empty_one_is_taken_over(tmp_path, monkeypatch):
    def no_space(*args, **kwargs):
        raise OSError(28, "No space left on device")

    lock = tmp_path / "toy.nc.lock"
    with monkeypatch.context() as patched:
        patched.setattr(json, "dump", no_space)
        with pytest.raises(OSError, match="No space left"):
            PathLock(tmp_path / "toy.nc").acquire()
    assert not lock.exists()  # it used to stay, empty, and refuse the rerun
    lock.write_text("")  # what an older gvbench left on a full disk
    old = time.time() - 10
    os.utime(lock, (old, old))
    with pytest.warns(UserWarning, match="taking over the lock of a run that is gone"):
        with PathLock(tmp_path / "toy.nc"):
            pass


def test_a_warmup_that_would_run_for_hours_is_refused_with_its_time(tmp_path, capsys):
    # The largest warmup accepted (2^24 steps) is hours for one toy cell, with a bar at 0%.
    grid = {"estimators": ["reinforce", "st_gumbel_softmax"], "tau": [1.0], "k": [1], "reps": 10}
    with pytest.raises(ValueError, match=r"warmup=16777216 would adapt 1 cell\(s\) for about"):
        gvbench.sweep(Toy(), warmup=2**24, path=tmp_path / "x.nc", progress=False, **grid)
    assert not (tmp_path / "x.nc").exists()
    argv = ["sweep", "toy", "--warmup", str(2**24), "--out", str(tmp_path / "x.nc")]
    with pytest.raises(SystemExit, match="raise max_warmup_seconds") as refused:
        main(argv)
    one_line(refused)
    with pytest.raises(SystemExit):
        main([*argv, "--max-warmup-seconds", "0"])
    assert "must be a number of seconds > 0, got '0'" in capsys.readouterr().err
    done = gvbench.sweep(Toy(), warmup=50, max_warmup_seconds=60, progress=False, **grid)
    assert (done.status == "done").all()
