import pytest
import torch

import gvbench.estimators as E

SAMPLE_ESTIMATORS = [n for n, i in E.available().items() if i.kind == "sample"]
CATEGORICAL_SAMPLERS = [n for n in SAMPLE_ESTIMATORS if not E.info(n).binary_only]

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available")


@pytest.fixture
def generator() -> torch.Generator:
    return torch.Generator().manual_seed(1234)
