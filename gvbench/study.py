"""Studies: what ``gvbench reproduce`` runs and ``gvbench report`` reads, found by entry point.

A study owns everything it needs: its presets (data), what it runs at a preset, the claims it
decides from its results and its section of the report. :class:`gvbench.experiment.Experiment`
is the study that trains a model; the toy sweeps of the paper are a study that trains nothing.
Both register in the ``gvbench.experiments`` entry-point group, as a user's package does::

    [project.entry-points."gvbench.experiments"]
    clusters = "my_package.clusters:CLUSTERS"      # a Study instance

and ``gvbench train clusters``, ``gvbench reproduce --only clusters``, the report and the
step-cost tool find it. Nothing in ``gvbench`` names a study.
"""

from __future__ import annotations

import abc
import dataclasses
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from gvbench import plugins

if TYPE_CHECKING:  # annotations only: the report imports this module, not the reverse
    import xarray as xr

    from gvbench.leaderboard.column import Column
    from gvbench.report.builder import Report
    from gvbench.report.claims import Claim


@dataclasses.dataclass(frozen=True)
class PresetRun:
    """How a preset runs: where its work goes, its first seed, its device and data.

    Attributes:
        executor: ``None`` (in-process), a ``concurrent.futures`` executor or a
            ``distributed.Client`` (see :mod:`gvbench.engine`).
        seed: the first seed; a preset's seeds are ``seed … seed + seeds − 1``.
        progress: whether progress bars are shown.
        device: the torch device a study trains and draws on.
        data_dir: a folder of data files for a study that reads any (``None``: the data it
            ships or generates).
    """

    executor: Any = None
    seed: int = 0
    progress: bool = True
    device: str = "cpu"
    data_dir: str | None = None


class Study(abc.ABC):
    """What a reproduction runs, decides and reports for one study.

    Class attributes:
        name: its name (``gvbench reproduce --only NAME``; its entry point's name).
        title: one line for help texts and its report section's heading.
        presets: preset name → a frozen dataclass of the preset's sizes (data, not code).
        order: where it comes in a reproduction and its report, lower first (gvbench's
            own: the toy 10, ListOps 20, the VAE 30; a plugin's 100 unless it says).
    """

    name: ClassVar[str]
    title: ClassVar[str]
    presets: ClassVar[Mapping[str, Any]]
    order: ClassVar[int] = 100

    def preset(self, name: str) -> Any:
        """The preset ``name``; a ``KeyError`` naming the study and its presets if none."""
        try:
            return self.presets[name]
        except KeyError:
            raise KeyError(
                f"unknown {self.name} preset {name!r}; available: {', '.join(self.presets)}"
            ) from None

    @abc.abstractmethod
    def reproduce(self, preset: str, folder: Path, run: PresetRun) -> dict[str, str]:
        """Run ``preset`` into ``folder`` (resumable); its results files, as name → path
        relative to ``folder``. The names are the study's own (see :meth:`owns`)."""

    def owns(self, name: str) -> bool:
        """Whether the results file ``name`` of a reproduction manifest is this study's."""
        return name == self.name

    def check(self, data: Mapping[str, xr.Dataset]) -> None:
        """Refuse, with a ``ValueError``, results of the wrong kind before anything is drawn."""
        return None  # a study whose files are all of one kind has nothing to check

    def claims(self, data: Mapping[str, xr.Dataset]) -> list[Claim]:
        """The claims decided from the study's results ``data`` (its files, by name)."""
        return []

    def report(self, report: Report, data: Mapping[str, xr.Dataset]) -> None:
        """Add the study's section(s) (figures and tables) to ``report``."""
        return None  # a study may decide claims and draw nothing

    def leaderboard(self, preset: str) -> tuple[Column, ...]:
        """The study's columns of ``gvbench leaderboard --preset PRESET`` (none: the study
        has no column at that preset). See :mod:`gvbench.leaderboard.column`."""
        del preset
        return ()


def registered() -> dict[str, Study]:
    """The installed studies by name, gvbench's own among them (``gvbench.experiments``),
    in their :attr:`~Study.order` (then by name).

    An entry point whose object is not a :class:`Study` is left out with a warning naming it.
    """
    studies = {}
    for name, value in plugins.found(plugins.EXPERIMENTS).items():
        if not isinstance(value, Study):
            warnings.warn(
                f"gvbench experiment {name!r} is not used: its entry point gives a "
                f"{type(value).__name__}, not a gvbench.study.Study instance",
                stacklevel=2,
            )
            continue
        if value.name != name:  # its folders and manifest entries go by value.name
            warnings.warn(
                f"gvbench experiment {name!r} is not used: the study it gives is named "
                f"{value.name!r}; register it under its own name",
                stacklevel=2,
            )
            continue
        studies[name] = value
    return dict(sorted(studies.items(), key=lambda item: (item[1].order, item[0])))


def get(name: str) -> Study:
    """The installed study ``name``; a ``KeyError`` listing those there are."""
    studies = registered()
    try:
        return studies[name]
    except KeyError:
        raise KeyError(
            f"unknown experiment {name!r}; installed: {', '.join(sorted(studies)) or 'none'}"
        ) from None
