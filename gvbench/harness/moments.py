r"""The one-pass reducer of gradient draws: the scalars every metric and its SE is built from.

**One pass, bounded memory.** The draws are reduced as they are produced, once each: the
reducer holds a few P-vectors (the running sum, the current centre, g*) and a few scalars per
draw, never the N × P draws, and it never replays them. The mean and the variance are exact
(the variance by Chan's pairwise update over blocks of draws). Draws are reduced in blocks
that double in length ([2, 4), [4, 8), …); block b is centred at the mean of the draws before
it, so the projections of its draws on that centre are on a direction independent of them.
Pairs of draws (2i, 2i + 1) give pair differences, and two pairs their product: what
:mod:`gvbench.harness.estimates` turns into standard errors (derived in ``docs/metrics.md``).
Numbers are a function of the sequence of draws alone: how the draws are cut into chunks
changes only floating-point rounding.

**Precision.** Draws stay in their own dtype (float32 for a float32 model): each block is
centred before anything is squared, so nothing cancels, and sums over draws are carried in
float64 (the running sum, flushed from a working-precision partial every few draws).
Finiteness is checked on each draw's squared norm, not element by element.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from gvbench.harness.estimates import DrawStatistics, Reference, metrics_of

# Two pairs of draws: the fewest for which the spread of the pair differences is defined.
MIN_DRAWS = 4
# Draws summed in the working dtype before the sum is carried into float64.
FLUSH_ROWS = 64


class NonFiniteDraws(ValueError):
    """A gradient draw has a NaN or infinite coordinate (its squared norm is not finite)."""


def segments(
    size: int, groups: Mapping[str, np.ndarray]
) -> tuple[list[slice], dict[str, list[int]]]:
    """Contiguous column ranges of equal group membership, and each group's ranges.

    Every statistic the reducer keeps is a sum over coordinates, so a group's value is the sum
    of its ranges' values: nothing is gathered or copied per group.
    """
    membership = np.zeros((size, len(groups)), dtype=bool)
    for index, columns in enumerate(groups.values()):
        membership[np.asarray(columns, dtype=np.int64), index] = True
    if size == 0:
        return [], {name: [] for name in groups}
    change = np.flatnonzero((membership[1:] != membership[:-1]).any(1)) + 1
    starts = [0, *change.tolist()]
    stops = [*change.tolist(), size]
    ranges = [slice(a, b) for a, b in zip(starts, stops, strict=True)]
    members = {
        name: [i for i, s in enumerate(ranges) if membership[s.start, index]]
        for index, name in enumerate(groups)
    }
    return ranges, members


def _row_dots(left: Tensor, right: Tensor) -> Tensor:
    """⟨left_r, right_r⟩ of each row of two (R, P′) matrices, in float64."""
    if left.shape[0] == 1:  # one draw per pass: a BLAS dot, no temporary
        return torch.dot(left[0], right[0]).double()[None]
    return torch.linalg.vecdot(left, right).double()


def _block(t: int) -> int:
    """The block of draw t: 0 for draws 0 and 1, then b for 2^b <= t < 2^(b+1)."""
    return 0 if t < 2 else t.bit_length() - 1


def _block_start(b: int) -> int:
    return 0 if b == 0 else 1 << b


class GradientMoments:
    """Metrics of a stream of gradient draws, in one pass and bounded memory.

    ``add(chunk)`` for each (R × P) chunk of draws, in order (any R, any float dtype and
    device; the chunk is the reducer's from then on: it is centred in place, and its last
    draw may be kept until the next chunk, so the caller must neither use nor change it);
    then
    ``metrics()``, and ``group_metrics()`` for each group of ``groups`` (name → columns).
    Memory: five P-vectors in float64 and one in the draws' dtype, a pending draw and a
    pending pair difference, and a few scalars per draw.
    """

    def __init__(
        self, reference: Reference, groups: Mapping[str, Sequence[int] | np.ndarray] | None = None
    ) -> None:
        self.reference = reference
        # A copy in torch's own (aligned) memory: BLAS dot products sum in an order that
        # depends on the address of their inputs, and a reference unpickled on a worker
        # lies elsewhere than the driver's; the last bit of a cosine would differ.
        self._g_star64 = torch.tensor(np.asarray(reference.gradient, float).reshape(-1))
        size = self._g_star64.numel()
        self.groups = {
            name: np.asarray(columns, dtype=np.int64) for name, columns in (groups or {}).items()
        }
        self._ranges, self._members = segments(size, self.groups)
        self.count = 0
        self._device: torch.device | None = None
        self._dtype: torch.dtype | None = None
        # Per-draw scalars, one column per range: ‖x‖², ⟨x, c − g*⟩, ⟨x, g*⟩; and the block.
        self._draws: list[Tensor] = []
        self._draw_block: list[int] = []
        self._pairs: list[Tensor] = []  # ‖Δ̃‖² per pair (Δ̃ = x_a − x_b), per range
        self._pair_first: list[int] = []  # draw index of each pair's first draw
        self._quads: list[Tensor] = []  # ⟨Δ̃_2j, Δ̃_2j+1⟩ per range
        self._pending: Tensor | None = None  # a centred draw waiting for its pair
        self._carry: Tensor | None = None  # a pair difference waiting for its quad
        self._differences: list[Tensor | None] = [None, None]  # reused, in turn
        self._turn = 0
        # Per block: its number, draws before it, ‖c − g*‖² per range.
        self._block_id = -1
        self._block_constants: dict[int, tuple[int, np.ndarray]] = {}
        # Chan's pairwise update per range: count, mean (float64), M2.
        self._mean: Tensor | None = None
        self._m2 = np.zeros(len(self._ranges))
        self._merged = 0
        self._block_rows = 0
        self._block_sum: Tensor | None = None  # float64 sum of centred draws in the block
        self._partial: Tensor | None = None  # working-dtype sum, carried into _block_sum
        self._partial_rows = 0
        self._block_square = np.zeros(len(self._ranges))  # Σ‖x‖² in the block, per range

    # --- the pass -----------------------------------------------------------------------

    def add(self, chunk: Tensor) -> None:
        """Reduce one chunk of draws (R × P): centred in place, then reduced to scalars."""
        if not isinstance(chunk, Tensor):
            chunk = torch.as_tensor(np.asarray(chunk, dtype=float))
        chunk = chunk.detach()
        if chunk.ndim != 2 or chunk.shape[1] != self._g_star64.shape[0]:
            raise ValueError(
                f"draws must be (R, {self._g_star64.shape[0]}) chunks matching the reference, "
                f"got shape {tuple(chunk.shape)}"
            )
        if not chunk.is_floating_point():
            chunk = chunk.double()
        if self._device is None:
            self._start(chunk)
        elif chunk.device != self._device or chunk.dtype != self._dtype:
            chunk = chunk.to(device=self._device, dtype=self._dtype)
        row = 0
        while row < chunk.shape[0]:
            t = self.count
            block = _block(t)
            if block != self._block_id:
                self._open_block(block, chunk[row])
            stop = min(chunk.shape[0], row + _block_start(block + 1) - t)
            self._reduce(chunk[row:stop])
            row = stop

    def _start(self, chunk: Tensor) -> None:
        self._device, self._dtype = chunk.device, chunk.dtype
        self._g_star64 = self._g_star64.to(self._device)
        self._g_star = self._g_star64.to(self._dtype)
        self._partial = torch.zeros_like(self._g_star)
        self._column_sum = torch.empty_like(self._g_star)
        # Preallocated: a fresh P-vector costs its page faults every time.
        self._block_sum = torch.zeros_like(self._g_star64)
        self._mean = torch.zeros_like(self._g_star64)
        self._centre64 = torch.empty_like(self._g_star64)
        self._scratch = torch.empty_like(self._g_star64)
        self._centre = torch.empty_like(self._g_star)
        self._directions = torch.empty(
            (2, len(self._g_star)), dtype=self._dtype, device=self._device
        )
        self._directions[1] = self._g_star

    def _open_block(self, block: int, first_row: Tensor) -> None:
        """Close the previous block (merge its moments) and centre the next one."""
        self._close_block()
        self._block_id = block
        if block == 0:  # no earlier draws: centre at the first draw itself
            self._centre64.copy_(first_row)
        else:
            self._centre64.copy_(self._mean)
        self._centre.copy_(self._centre64)
        torch.sub(self._centre64, self._g_star64, out=self._scratch)  # c − g*
        self._directions[0].copy_(self._scratch)
        self._block_constants[block] = (self.count, self._squared_norms(self._scratch))

    def _reduce(self, rows: Tensor) -> None:
        """Rows of one block: centre, per-draw scalars, pairs and quads, sums."""
        rows.sub_(self._centre)
        count = rows.shape[0]
        projections = [torch.mm(self._directions[:, c], rows[:, c].T) for c in self._ranges]
        scalars = torch.stack(
            [
                self._per_range(lambda c: _row_dots(rows[:, c], rows[:, c]), count),
                torch.stack([p[0] for p in projections], 1).double().cpu(),  # ⟨x, c − g*⟩
                torch.stack([p[1] for p in projections], 1).double().cpu(),  # ⟨x, g*⟩
            ],
            1,
        )
        squared = scalars[:, 0].sum(1)
        if not bool(torch.isfinite(squared).all()):
            bad = int((~torch.isfinite(squared)).sum())
            raise NonFiniteDraws(
                f"{bad} of the draws {self.count}…{self.count + count - 1} are not finite"
            )
        self._draws.append(scalars)
        self._draw_block.extend([self._block_id] * count)
        self._block_square += scalars[:, 0].sum(0).numpy()
        if count == 1:
            self._partial.add_(rows[0])
        else:
            torch.sum(rows, 0, out=self._column_sum)
            self._partial.add_(self._column_sum)
        self._partial_rows += count
        self._block_rows += count
        if self._partial_rows >= FLUSH_ROWS:
            self._flush()
        self._pair_up(rows)
        self.count += count

    def _pair_up(self, rows: Tensor) -> None:
        """Pair differences of draws (2i, 2i + 1) and products of pairs (2j, 2j + 1)."""
        waiting = self._pending is not None  # draw count − 1 waits for draw count
        pairs = (rows.shape[0] + waiting) // 2
        start = 1 if waiting else 0
        if pairs:
            # Two buffers in turn: a pair difference carried over to the next chunk's quad
            # stays where it was written.
            self._turn ^= 1
            buffer = self._differences[self._turn]
            if buffer is None or len(buffer) < pairs:
                buffer = torch.empty((pairs, rows.shape[1]), dtype=rows.dtype, device=rows.device)
                self._differences[self._turn] = buffer
            stacked = buffer[:pairs]
            if waiting:
                torch.sub(self._pending, rows[0], out=stacked[0])
            end = start + 2 * (pairs - start)
            if end > start:
                torch.sub(rows[start:end:2], rows[start + 1 : end : 2], out=stacked[start:])
        # The chunk is the reducer's from add() on (see add): its last draw waits in place.
        self._pending = rows[-1] if (rows.shape[0] + waiting) % 2 else None
        if not pairs:
            return
        first_pair = (self.count - start) // 2
        self._pairs.append(
            self._per_range(lambda c: _row_dots(stacked[:, c], stacked[:, c]), pairs)
        )
        self._pair_first.extend(range(2 * first_pair, 2 * (first_pair + pairs), 2))
        # Quads: pair 2j with pair 2j + 1 (a pair left over waits for the next chunk).
        offset = 0
        if first_pair % 2:
            carried = self._carry
            self._quads.append(
                self._per_range(lambda c: _row_dots(carried[None, c], stacked[:1, c]), 1)
            )
            offset = 1
        whole = (pairs - offset) // 2
        if whole:
            left = stacked[offset : offset + 2 * whole : 2]
            right = stacked[offset + 1 : offset + 2 * whole : 2]
            self._quads.append(self._per_range(lambda c: _row_dots(left[:, c], right[:, c]), whole))
        self._carry = stacked[-1] if offset + 2 * whole < pairs else None

    def _squared_norms(self, vector: Tensor) -> np.ndarray:
        """‖vector‖² over each range (a float64 P-vector), as an array."""
        return np.array([float(torch.dot(vector[s], vector[s])) for s in self._ranges])

    def _per_range(self, statistic: Callable[[slice], Tensor], count: int) -> Tensor:
        """``statistic(columns)`` of every range, as a (count, ranges) float64 CPU tensor."""
        values = torch.empty((count, len(self._ranges)), dtype=torch.float64)
        for index, columns in enumerate(self._ranges):
            values[:, index] = statistic(columns).to(torch.float64).cpu()
        return values

    def _flush(self) -> None:
        if self._partial_rows:
            self._scratch.copy_(self._partial)  # widened once per FLUSH_ROWS draws
            self._block_sum.add_(self._scratch)
            self._partial.zero_()
            self._partial_rows = 0

    def _close_block(self) -> None:
        """Chan's update: merge the block's count, mean and M2 into the running ones."""
        if self._block_id < 0 or not self._block_rows:
            return
        self._flush()
        rows = self._block_rows
        offset = self._block_sum.div_(rows)  # block mean − centre
        block_m2 = self._block_square - rows * self._squared_norms(offset)
        shift = offset.add_(self._centre64).sub_(self._mean)  # block mean − running mean
        total = self._merged + rows
        self._m2 = self._m2 + block_m2 + self._squared_norms(shift) * self._merged * rows / total
        self._mean.add_(shift, alpha=rows / total)
        self._merged += rows
        self._block_rows = 0
        self._block_sum.zero_()
        self._block_square = np.zeros(len(self._ranges))

    # --- the metrics --------------------------------------------------------------------

    def metrics(self) -> dict[str, float]:
        """All metrics of the whole gradient with ``*_se`` companions
        (:func:`gvbench.harness.estimates.metrics_of`)."""
        return self._metrics(list(range(len(self._ranges))), self.reference)

    def covariance_square(self) -> float:
        r""":math:`\mathrm{tr}\,\Sigma^2`, estimated without bias: the mean of
        :math:`\langle\Delta_{2j}, \Delta_{2j+1}\rangle^2` over products of pair differences."""
        self._finish()
        quads = torch.cat(self._quads).sum(1).numpy() / 2
        scale = float(np.max(np.abs(quads))) if len(quads) else 0.0
        if not (scale > 0 and math.isfinite(scale)):
            return 0.0
        return float(np.mean((quads / scale) ** 2)) * scale**2

    def group_metrics(self, name: str) -> dict[str, float]:
        """The metrics of the coordinates of group ``name`` alone."""
        return self._metrics(self._members[name], self.reference.restrict(self.groups[name]))

    def _finish(self) -> None:
        if self.count < MIN_DRAWS:
            raise ValueError(
                f"need at least {MIN_DRAWS} draws (two pairs, for the standard errors), "
                f"got {self.count}"
            )
        self._close_block()

    def _metrics(self, ranges: list[int], reference: Reference) -> dict[str, float]:
        return metrics_of(self._statistics(ranges), reference)

    def _statistics(self, ranges: list[int]) -> DrawStatistics:
        """What the pass kept, summed over the ranges ``ranges`` (a group's, or all)."""
        self._finish()
        pick = list(ranges)
        columns = [self._ranges[i] for i in pick]

        def dot(a: Tensor, b: Tensor) -> float:
            return sum(float(torch.dot(a[r], b[r])) for r in columns)

        delta = torch.sub(self._mean, self._g_star64, out=self._scratch)
        blocks = np.asarray(self._draw_block)
        return DrawStatistics(
            draws=torch.cat(self._draws)[:, :, pick].sum(2).numpy(),
            constants=np.array(
                [self._block_constants[b][1][pick].sum() for b in range(blocks.max() + 1)]
            ),
            blocks=blocks,
            before=np.array([self._block_constants[b][0] for b in range(blocks.max() + 1)]),
            first=np.asarray(self._pair_first),
            pair_squares=torch.cat(self._pairs)[:, pick].sum(1).numpy() / 2,  # ‖Δ‖²
            quads=torch.cat(self._quads)[:, pick].sum(1).numpy() / 2,  # ⟨Δ, Δ'⟩
            distance2=dot(delta, delta),
            mean2=dot(self._mean, self._mean),
            reference2=dot(self._g_star64, self._g_star64),
            mean_reference=dot(self._mean, self._g_star64),
            m2=float(self._m2[pick].sum()),
            size=sum(r.stop - r.start for r in columns),
        )
