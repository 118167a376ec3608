r"""Variance, bias², MSE, cosine and SNR of N gradient draws, each with a standard error.

Definitions (``shared/spec/estimators.md``, metrics): draws :math:`\hat g_1 \dots \hat g_N \in
\mathbb{R}^P`, reference :math:`g^*` (exact, or itself an estimate from :math:`N_{ref}` draws of
trace variance :math:`V_{ref}`):

- :math:`V = \frac1{N-1}\sum_r \|\hat g_r - \bar g\|^2` (trace of the covariance), and :math:`V/P`;
- :math:`B^2 = \|\bar g - g^*\|^2 - V/N - V_{ref}/N_{ref}` (unbiased for :math:`\|\mathbb{E}\hat g - g^*\|^2`;
  it can be negative when the bias is below the noise);
- :math:`\mathrm{MSE} = B^2 + V = \frac1N\sum_r\|\hat g_r - g^*\|^2 - V_{ref}/N_{ref}`;
- :math:`\cos(\bar g, g^*)` and :math:`\mathrm{SNR} = \|\bar g\| / \sqrt{V/P}`.

**One pass, bounded memory.** The draws are reduced as they are produced, once each: the
reducer holds a few P-vectors (the running sum, the current centre, g*) and a few scalars per
draw, never the N × P draws, and it never replays them. The values above are exact (the
variance by Chan's pairwise update over blocks of draws). Their standard errors need second
moments of the draws along directions that are only known at the end (:math:`\bar g`), which
one pass cannot project on; they are estimated instead from quantities that one pass can form
and whose expectations are known exactly:

- **Pair differences.** Draws 2i and 2i + 1 give :math:`\Delta_i = (\hat g_{2i} - \hat g_{2i+1})/\sqrt2`:
  i.i.d., mean 0, covariance Σ, whatever the centre the draws were reduced about. For
  :math:`z = \hat g - \mathbb{E}\hat g`, :math:`\mathrm{Var}\|\Delta\|^2 = \mathrm{Var}\|z\|^2/2 + \mathrm{tr}\,\Sigma^2`
  and :math:`\mathbb{E}\langle\Delta_{2j}, \Delta_{2j+1}\rangle^2 = \mathrm{tr}\,\Sigma^2`, so both
  :math:`\mathrm{tr}\,\Sigma^2` and :math:`\mathrm{Var}\|z\|^2` are estimated without bias.
- **Directions from earlier draws.** Draws are reduced in blocks that double in length
  ([2, 4), [4, 8), …); block b is centred at :math:`c_b`, the mean of the :math:`m_b = 2^b`
  draws before it, which is independent of the block's own draws. For a pair in block b and
  :math:`v_b = a\,c_b + b\,g^*`, :math:`\mathbb{E}\langle\Delta, v_b\rangle^2 = v^\top\Sigma v + a^2\,\mathrm{tr}\,\Sigma^2/m_b`
  (:math:`v = a\,\mathbb{E}\hat g + b\,g^*`), so :math:`v^\top\Sigma v` is the mean of the squared
  projections less :math:`a^2\widehat{\mathrm{tr}\,\Sigma^2}/m_b`. Pairs are weighted by
  :math:`m_b^2` (the inverse variance of a squared projection where the bias is small), so the
  last blocks, whose centres are means of half the draws or more, carry the estimate. The
  first pair (draws 0 and 1) has no earlier draws and enters only the pair moments.

The standard errors are then

- :math:`\mathrm{SE}(V)^2 = [\mathrm{Var}\|z\|^2 + 2\,\mathrm{tr}\,\Sigma^2/(N-1)]/N`, the exact variance of
  the sample variance (the U-statistic), with :math:`\mathrm{Var}\|z\|^2` from the spread of the
  draws' squared norms within each block less the centre's :math:`4\,\mathrm{tr}\,\Sigma^2/m_b`
  (all N draws; the pair differences' spread, from half of them, under-covered);
- :math:`\mathrm{SE}(B^2)^2 = 4\delta^\top\Sigma\delta/N + 2\,\mathrm{tr}\,\Sigma^2/N^2` (:math:`\delta = \mathbb{E}\hat g - g^*`):
  the zero-bias term is always kept whole and the first-order term added only where its
  estimate is positive (it is noise of either sign at zero bias, which let a cell report as
  little as :math:`1/\sqrt2` of the truth), plus :math:`\mathrm{Var}(\hat V)/N^2`. A sampled
  reference adds what its own draws measured (:math:`\mathrm{tr}\,\Sigma_{ref}^2` and the SE of
  :math:`\hat V_{ref}`, from its pair differences), bounded without assuming a law for its
  draws: :math:`4\|\delta\|^2\sqrt{\mathrm{tr}\,\Sigma_{ref}^2}/N_{ref}` for :math:`2\langle\delta,\varepsilon\rangle`,
  the zero-bias terms together as :math:`2(\sqrt{\mathrm{tr}\,\Sigma^2}/N + \sqrt{\mathrm{tr}\,\Sigma_{ref}^2}/N_{ref})^2`
  (the cross term :math:`2\langle\bar g - \mathbb{E}\hat g, \varepsilon\rangle` included), and
  :math:`\mathrm{Var}(\hat V_{ref})/N_{ref}^2`. Before, the reference's covariance was taken as
  isotropic, :math:`2V_{ref}^2/(P N_{ref}^2)`, up to P times too small for heavy-tailed draws
  whose noise lies along few directions;
- :math:`\mathrm{SE(MSE)}^2 = \mathrm{Var}\,\|\hat g - g^*\|^2/N` plus the same reference terms, from the
  per-draw errors (exact);
- SNR by the delta method on :math:`\log\|\bar g\| - \tfrac12\log V`, with the covariance of the two
  (the third moment :math:`\mathrm{Cov}(\langle z, \bar u\rangle, \|z\|^2)`, pooled within blocks; it
  was left out before, which made the SE of skewed draws' SNR 15% short); the cosine by the
  delta method along its
  gradient :math:`a\bar g + b g^*` plus its second-order term, :math:`\mathrm{tr}\,\Sigma_\perp^2/(2N^2\|\bar g\|^4)`
  (Σ projected off :math:`\bar g`, from the pair products), which is all that is left where
  :math:`\bar g \parallel g^*`; the first is added only where its estimate is positive, the
  second always (the SNR's: the covariance term's noise is floored at :math:`(\sigma_a - \sigma_b)^2`).

Before this estimator, a second pass replayed every draw to project it on :math:`\bar g`
(twice the cost of the draws). What the intervals built from these standard errors cover,
measured over repeated experiments for three laws of draws, at zero and at large bias, is in
the README's section on statistics (``python -m tests.coverage`` measures it again). Numbers are
a function of the sequence of draws alone: how the draws are cut into passes changes only
floating-point rounding.

**Precision.** Draws stay in their own dtype (float32 for a float32 model): each block is
centred at :math:`c_b` before anything is squared, so nothing cancels, and sums over draws
are carried in float64 (the running sum, flushed from a working-precision partial every few
draws). Finiteness is checked on each draw's squared norm, not element by element.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

METRICS = ("variance", "variance_per_coord", "bias2", "mse", "cosine", "snr")
# Two pairs of draws: the fewest for which the spread of the pair differences is defined.
MIN_DRAWS = 4
# Draws summed in the working dtype before the sum is carried into float64.
FLUSH_ROWS = 64


@dataclasses.dataclass(frozen=True)
class Reference:
    """A reference gradient g* with its own uncertainty (count 0: exact).

    ``coordinate_variance`` (per coordinate, summing to ``variance``) lets a parameter group
    subtract its own share of the reference's noise.
    """

    gradient: np.ndarray
    variance: float = 0.0
    count: int = 0
    kind: str = "exact"
    coordinate_variance: np.ndarray | None = None
    # tr Σ_ref² of one reference draw, and the standard error of ``variance``, estimated from
    # the reference's own draws (pair differences, as for a cell); NaN where unknown.
    covariance_square: float = math.nan
    variance_se: float = math.nan

    @property
    def noise(self) -> float:
        """:math:`V_{ref}/N_{ref}`, the expected squared error of g* (0 when exact)."""
        return self.variance / self.count if self.count else 0.0

    def noise_square(self) -> float:
        r""":math:`\mathrm{tr}\,\Sigma_{ref}^2`, or its bound :math:`V_{ref}^2` where it was not
        measured (it holds for any covariance: :math:`\sum\lambda^2 \le (\sum\lambda)^2`)."""
        if math.isfinite(self.covariance_square):
            return max(0.0, min(self.covariance_square, self.variance**2))
        return self.variance**2

    def restrict(self, columns: np.ndarray) -> Reference:
        """The reference of the coordinates ``columns`` (a parameter group)."""
        gradient = np.asarray(self.gradient, float).reshape(-1)
        if self.coordinate_variance is not None:
            per_coordinate = np.asarray(self.coordinate_variance)[columns]
            variance = float(per_coordinate.sum())
        else:  # only the trace is known: its share, as if isotropic
            per_coordinate = None
            variance = self.variance * len(columns) / max(1, gradient.size)
        # A principal block of Σ has tr Σ_gg² <= tr Σ²; the group's own V̂'s spread is unknown.
        return Reference(
            gradient[columns],
            variance,
            self.count,
            self.kind,
            per_coordinate,
            covariance_square=min(self.noise_square(), variance**2),
        )


class NonFiniteDraws(ValueError):
    """A gradient draw has a NaN or infinite coordinate (its squared norm is not finite)."""


def trace_variance(draws: np.ndarray | torch.Tensor) -> tuple[float, float]:
    r""":math:`V = \frac1{N-1}\sum_r\|\hat g_r - \bar g\|^2` of (N, P) draws, and its standard error."""
    d = draws.detach().cpu().double().numpy() if isinstance(draws, torch.Tensor) else draws
    n = d.shape[0]
    terms = ((d - d.mean(0)) ** 2).sum(1) * n / (n - 1)
    return float(terms.mean()), float(terms.std(ddof=1) / np.sqrt(n))


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


def _pooled_covariance(x: np.ndarray, y: np.ndarray, groups: np.ndarray) -> float:
    """The covariance of x and y within groups (each about its own means), pooled."""
    total, freedom = 0.0, 0
    for group in np.unique(groups):
        mask = groups == group
        if mask.sum() > 1:
            total += float(np.sum((x[mask] - x[mask].mean()) * (y[mask] - y[mask].mean())))
            freedom += int(mask.sum()) - 1
    return total / freedom if freedom else 0.0


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
        """All metrics of the whole gradient with ``*_se`` companions (module docstring)."""
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
        self._finish()
        pick = list(ranges)
        columns = [self._ranges[i] for i in pick]

        def dot(a: Tensor, b: Tensor) -> float:
            return sum(float(torch.dot(a[r], b[r])) for r in columns)

        delta = torch.sub(self._mean, self._g_star64, out=self._scratch)
        draws = torch.cat(self._draws)[:, :, pick].sum(2).numpy()  # (n, 3)
        blocks = np.asarray(self._draw_block)
        constants = np.array(
            [self._block_constants[b][1][pick].sum() for b in range(blocks.max() + 1)]
        )
        before = np.array([self._block_constants[b][0] for b in range(blocks.max() + 1)])
        first = np.asarray(self._pair_first)
        pair_squares = torch.cat(self._pairs)[:, pick].sum(1).numpy() / 2  # ‖Δ‖²
        quads = torch.cat(self._quads)[:, pick].sum(1).numpy() / 2  # ⟨Δ, Δ'⟩
        norms = dict(
            distance2=dot(delta, delta),
            mean2=dot(self._mean, self._mean),
            reference2=dot(self._g_star64, self._g_star64),
            mean_reference=dot(self._mean, self._g_star64),
            m2=float(self._m2[pick].sum()),
        )
        # In units of the gradient's own scale: ST's variance of 1e-156 is (1e-78)², and
        # its fourth powers (tr Σ²) would underflow in absolute units.
        unit = max(
            math.sqrt(float(np.mean(draws[:, 0]))),
            *(math.sqrt(norms[k]) for k in ("mean2", "reference2")),
        )
        unit = unit if unit > 0 and math.isfinite(unit) else 1.0
        metrics = _metrics_in_units(
            draws / unit**2,
            constants / unit**2,
            blocks,
            before,
            first,
            pair_squares / unit**2,
            quads / unit**2,
            {k: v / unit**2 for k, v in norms.items()},
            sum(r.stop - r.start for r in columns),
            Reference(
                np.zeros(0),
                reference.variance / unit**2,
                reference.count,
                reference.kind,
                covariance_square=reference.noise_square() / unit**4,
                variance_se=reference.variance_se / unit**2,
            ),
        )
        for name, power in UNITS_POWER.items():
            metrics[name] *= unit**power
        return metrics


# The power of the gradient's unit in each metric (cosine and SNR have none).
UNITS_POWER = {
    "variance": 2,
    "variance_se": 2,
    "variance_per_coord": 2,
    "variance_per_coord_se": 2,
    "bias2": 2,
    "bias2_se": 2,
    "mse": 2,
    "mse_se": 2,
    "mean_norm": 1,
    "reference_variance": 2,
}


def _metrics_in_units(
    draws: np.ndarray,
    constants: np.ndarray,
    blocks: np.ndarray,
    before: np.ndarray,
    first: np.ndarray,
    pair_squares: np.ndarray,
    quads: np.ndarray,
    norms: dict[str, float],
    p: int,
    reference: Reference,
) -> dict[str, float]:
    """The metrics from the reducer's scalars (module docstring), all of one scale."""
    n = len(draws)
    squared, toward_centre, toward_reference = draws.T
    errors = squared + 2 * toward_centre + constants[blocks]  # ‖ĝ − g*‖² per draw
    trace_sq = float(np.mean(quads**2))  # tr Σ²
    variance = norms["m2"] / (n - 1)
    # Var‖z‖² from the draws' squared norms within each block b > 0, each about its own mean
    # (every draw counts; the pair differences' spread used half of them, and the SE of a
    # three-valued draw's variance covered 90% where it should 95%): x = z + (Eĝ − c_b), and
    # the centre's error adds 4 tr Σ²/m_b, which is subtracted.
    later = blocks > 0
    if later.sum() > int(blocks.max()):
        within = _pooled_covariance(squared[later], squared[later], blocks[later])
        spread_z2 = max(0.0, within - 4 * trace_sq * float(np.mean(1.0 / before[blocks[later]])))
    else:  # too few draws for blocks of two: the pair differences
        spread_z2 = max(0.0, 2 * float(np.var(pair_squares, ddof=1)) - 2 * trace_sq)
    variance_se = math.sqrt((spread_z2 + 2 * trace_sq / (n - 1)) / n)

    # Pairs with a direction from earlier draws: projections on c_b − g* and g*.
    directed = blocks[first] > 0
    weight = 1.0 / before[blocks[first[directed]]]
    a, b = first[directed], first[directed] + 1
    on_distance = (toward_centre[a] - toward_centre[b]) / math.sqrt(2)  # ⟨Δ, c − g*⟩
    on_reference = (toward_reference[a] - toward_reference[b]) / math.sqrt(2)  # ⟨Δ, g*⟩
    on_centre = on_distance + on_reference  # ⟨Δ, c⟩
    # cᵀΣ²c from quads of two directed pairs in one block: E⟨Δ, c⟩⟨Δ', c⟩⟨Δ, Δ'⟩.
    pair_of = {int(f) // 2: i for i, f in enumerate(a)}
    fourth = [
        on_centre[pair_of[2 * j]] * on_centre[pair_of[2 * j + 1]] * quads[j]
        for j in range(len(quads))
        if 2 * j in pair_of and 2 * j + 1 in pair_of and blocks[4 * j] == blocks[4 * j + 2]
    ]
    centre_fourth = float(np.mean(fourth)) if fourth else 0.0

    def quadratic(
        projections: np.ndarray, centre_coefficient: float, floor: float | np.ndarray
    ) -> float:
        """vᵀΣv for v = a c + b g*, from pairs whose centre c_b is the mean of m_b earlier
        draws: E⟨Δ, v_b⟩² = vᵀΣv + a² tr Σ²/m_b. The centre's noise is subtracted down to
        ``floor`` × a² tr Σ². A pair counts m_b² times: its squared projection's variance is
        about (tr Σ²/m_b)² where the bias is small, so the first blocks' noisy directions
        barely count."""
        if not len(projections):
            return math.nan
        noise = centre_coefficient**2 * trace_sq * (weight - floor)
        precision = 1.0 / weight**2
        return float(np.sum(precision * (projections**2 - noise)) / np.sum(precision))

    distance2 = norms["distance2"]
    mean_norm, ref_norm = math.sqrt(norms["mean2"]), math.sqrt(norms["reference2"])
    bias2 = distance2 - variance / n - reference.noise
    # The reference's noise ε (covariance Σ_ref/N_ref) enters ‖ḡ − g*‖² as 2⟨δ, ε⟩, as
    # ‖ε‖² − V_ref/N_ref, and as 2⟨ḡ − Eĝ, ε⟩; bias² also carries V̂_ref's own error. Each is
    # bounded by what the reference's draws measured, with no assumption on their law:
    # δᵀΣ_refδ <= ‖δ‖² λ_max <= ‖δ‖² √tr Σ_ref², and tr ΣΣ_ref <= √(tr Σ² tr Σ_ref²), so the
    # zero-bias terms add up to 2(√tr Σ²/N + √tr Σ_ref²/N_ref)², not 2 tr Σ²/N² + 2 tr Σ_ref²/N_ref².
    reference_root = 0.0
    reference_var = 0.0
    if reference.count:
        reference_root = math.sqrt(reference.noise_square()) / reference.count
        reference_var = 4 * distance2 * reference_root
        if math.isfinite(reference.variance_se):
            reference_var += (reference.variance_se / reference.count) ** 2
    # 4δᵀΣδ/N: its estimate is noise of either sign at zero bias, so only a positive one is
    # added; the zero-bias term is kept whole, so a cell never reports less than it.
    spread = quadratic(on_distance, 1.0, 0.0)  # δᵀΣδ
    spread = spread if math.isfinite(spread) else 0.0
    zero_bias = 2 * (math.sqrt(trace_sq) / n + reference_root) ** 2
    draws_var = 4 * max(0.0, spread) / n + (variance_se / n) ** 2
    bias2_se = math.sqrt(draws_var + zero_bias + reference_var)
    mse = float(np.mean(errors)) - reference.noise
    mse_se = math.sqrt(
        float(np.var(errors, ddof=1)) / n
        + reference_var
        + 2 * reference_root * (reference_root + 2 * math.sqrt(trace_sq) / n)
    )
    if mean_norm > 0 and ref_norm > 0:
        cosine = norms["mean_reference"] / (mean_norm * ref_norm)
        # ∇cos = (ĝ* − cos ū)/‖ḡ‖ with ū = ḡ/‖ḡ‖; ḡ's share is carried by the centre c_b.
        unit_centre, unit_reference = on_centre / mean_norm, on_reference / ref_norm
        first_order = (
            quadratic(unit_reference - cosine * unit_centre, cosine / mean_norm, 0.0)
            / norms["mean2"]
        )
        # Where ḡ ∥ g* the first-order term is noise of either sign; the spread is of second
        # order, 1 − cos ≈ ‖η⊥‖²/(2‖ḡ‖²) (η the mean's error, ⊥ to ḡ), of variance
        # tr Σ⊥²/(2N²‖ḡ‖⁴), with tr Σ⊥² = tr Σ² − 2 ūᵀΣ²ū + (ūᵀΣū)².
        unit_square = quadratic(unit_centre, 1.0 / mean_norm, 0.0)
        unit_fourth = centre_fourth / norms["mean2"]
        perpendicular = max(0.0, trace_sq - 2 * unit_fourth + unit_square**2)
        # The first-order term's estimate is noise of either sign where ḡ ∥ g*: only a
        # positive one is added, and the second-order term is kept whole; where both vanish
        # (all the spread along ḡ), the uncorrected first-order term, an upper bound, stands in.
        # A sampled reference moves the cosine too: to first order along ∇_g* cos, whose
        # squared norm is (1 − cos²)/‖g*‖² (its variance bounded by √tr Σ_ref²/N_ref per unit
        # length, as for bias²), and to second order its noise ⊥ g* adds to the draws'.
        second_order = (math.sqrt(perpendicular) / n + reference_root) ** 2 / (
            2 * norms["mean2"] ** 2
        )
        reference_first = (1 - cosine**2) * reference_root / norms["reference2"]
        cosine_var = max(0.0, first_order) / n + reference_first + second_order
        if cosine_var <= 0:
            along = unit_reference - cosine * unit_centre
            cosine_var = quadratic(along, cosine / mean_norm, weight) / norms["mean2"] / n
        cosine_se = math.sqrt(max(0.0, cosine_var))
    else:
        cosine = cosine_se = math.nan
    if variance > 0 and mean_norm > 0:
        snr = mean_norm / math.sqrt(variance / p)
        # log SNR = log‖ḡ‖ − ½ log V: ‖ḡ‖ and V move together where the draws are skewed
        # (Cov(⟨z, ū⟩, ‖z‖²), the third moment along ū, pooled within blocks: the centres'
        # noise averages out), so the covariance enters with the two variances.
        norm_var = max(0.0, quadratic(on_centre / mean_norm, 1.0 / mean_norm, 0.0))
        along = (toward_centre + toward_reference) / mean_norm  # ⟨x, c_b⟩/‖ḡ‖
        later = blocks > 0
        covariance = _pooled_covariance(squared[later], along[later], blocks[later])
        norm_term = norm_var / (n * norms["mean2"])
        variance_term = (variance_se / (2 * variance)) ** 2
        log_var = norm_term + variance_term - covariance / (n * mean_norm * variance)
        # The covariance's estimate is noisy too: by Cauchy–Schwarz the variance of a
        # difference is at least (σ_a − σ_b)², which is kept as the floor.
        floor = (math.sqrt(norm_term) - math.sqrt(variance_term)) ** 2
        snr_se = snr * math.sqrt(max(floor, log_var))
    else:
        snr = snr_se = math.nan
    return {
        "variance": variance,
        "variance_se": variance_se,
        "variance_per_coord": variance / p,
        "variance_per_coord_se": variance_se / p,
        "bias2": bias2,
        "bias2_se": bias2_se,
        "mse": mse,
        "mse_se": mse_se,
        "cosine": cosine,
        "cosine_se": cosine_se,
        "snr": float(snr),
        "snr_se": float(snr_se),
        "mean_norm": mean_norm,
        "reference_variance": reference.noise,
    }


def gradient_metrics(draws: np.ndarray | torch.Tensor, reference: Reference) -> dict[str, float]:
    """All metrics of ``draws`` (N × P, N >= 4) held in memory against ``reference``."""
    d = (
        torch.as_tensor(np.asarray(draws, dtype=float))
        if not isinstance(draws, torch.Tensor)
        else draws.detach()
    )
    if d.ndim != 2 or d.shape[0] < MIN_DRAWS:
        raise ValueError(
            f"draws must be an (N, P) array with N >= {MIN_DRAWS}, got shape {tuple(d.shape)}"
        )
    g_star = np.asarray(reference.gradient, float).reshape(-1)
    if g_star.shape[0] != d.shape[1]:
        raise ValueError(f"reference has {g_star.shape[0]} coordinates, draws have {d.shape[1]}")
    moments = GradientMoments(reference)
    moments.add(d.clone())  # centred in place: the caller's draws stay as they are
    return moments.metrics()
