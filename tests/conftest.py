import os

import pytest
import torch

import gvbench.estimators as E

if os.environ.get("PYTEST_XDIST_WORKER"):
    # Two workers on two cores: torch's own threads would spin against the other worker's
    # (a small test ran 10× slower so); one each, and one in the processes a test starts.
    torch.set_num_threads(1)
    os.environ["OMP_NUM_THREADS"] = "1"

# Estimators of categorical variables (one-hot rows); those of k-subsets have their own
# contract (tests/test_registry_contract.py's last section).
CATEGORICAL_ESTIMATORS = [n for n, i in E.available().items() if i.variable == "categorical"]
SUBSET_ESTIMATORS = [n for n, i in E.available().items() if i.variable == "subset"]
SAMPLE_ESTIMATORS = [n for n in CATEGORICAL_ESTIMATORS if E.info(n).kind == "sample"]
CATEGORICAL_SAMPLERS = [n for n in SAMPLE_ESTIMATORS if not E.info(n).binary_only]

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available")


@pytest.fixture
def generator() -> torch.Generator:
    return torch.Generator().manual_seed(1234)


@pytest.fixture(scope="session")
def tiny_report(tmp_path_factory):
    """The paper's reproduction at the ``tiny`` preset with its report, built once per test
    session (the field's tasks check their own presets and report sections)."""
    from gvbench.reproduce import reproduce

    folder = tmp_path_factory.mktemp("report")
    reproduce("tiny", folder, experiments=("toy", "listops", "vae"), progress=False)
    return folder


def pytest_collection_modifyitems(config, items):
    """Under pytest-xdist (``make test`` runs ``-n 2 --dist loadgroup``), a file's tests stay
    on one worker, so a module's fixtures are built once; the tests sharing the session's
    tiny report share one worker too, so it is built once."""
    for item in items:
        if item.get_closest_marker("xdist_group"):
            continue
        fixtures = getattr(item, "fixturenames", ())
        group = "tiny-report" if "tiny_report" in fixtures else item.nodeid.split("::")[0]
        item.add_marker(pytest.mark.xdist_group(group))
