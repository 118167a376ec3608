"""Small modules like a user's, for tests that measure through ModuleTask."""

from __future__ import annotations

import torch
from torch import nn

from gvbench.tasks import ModuleTask


def tiny_model_task(**options):
    torch.manual_seed(0)

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = nn.Linear(3, 6)
            self.decoder = nn.Linear(6, 3)

        def forward(self, x, sample):
            z = sample(self.encoder(x).view(len(x), 3, 2))
            return ((self.decoder(z.flatten(1)) - x) ** 2).sum(-1)

    x = torch.randn(6, 3, generator=torch.Generator().manual_seed(1)).double()
    return ModuleTask(Model().double(), x, arity=2, **options)
