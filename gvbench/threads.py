"""Torch intra-op threads fixed for one unit of work (a sweep cell, a training run).

Reductions split across threads add in another order, so the thread count is part of what
makes a result reproducible; fixing it also keeps parallel units from oversubscribing cores.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


@contextlib.contextmanager
def pinned_threads(threads: int) -> Iterator[None]:
    """Run the block with ``torch.set_num_threads(threads)``, restoring the previous count."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
