"""The reproduction report: each study's claims decided from a run's results, its figures
(PNG and PDF), its tables (CSV) and one HTML page with its stylesheet, in one folder.

:func:`build_report` reads what :func:`gvbench.reproduce.reproduce` wrote (its
``reproduction.json`` names the files) and asks each installed study
(:mod:`gvbench.study`) for the claims and sections of its own files; it runs no estimator.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

import pandas as pd
import xarray as xr

from gvbench import provenance, study
from gvbench.atomic_files import write_bytes
from gvbench.report.builder import Report
from gvbench.report.claims import FAMILY_ERROR, HOLDS, Claim, family
from gvbench.report.page import render, write_page

__all__ = ["MANIFEST", "build_report", "read_manifest"]

MANIFEST = "reproduction.json"


def read_manifest(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The manifest ``reproduction.json`` at ``path``, checked before anything is drawn: a
    ``ValueError`` naming the file and what is wrong where it is not one."""
    try:
        manifest = json.loads(Path(path).read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(
            f"{path} is damaged (not JSON: {error}); rerun `gvbench reproduce` to rewrite it"
        ) from None
    problems = []
    if not isinstance(manifest, dict):
        problems.append(f"a JSON {type(manifest).__name__}, not an object")
    else:
        if not isinstance(manifest.get("preset"), str):
            problems.append("'preset' is missing or not a string")
        for key in ("files", "provenance"):
            value = manifest.get(key)
            if not isinstance(value, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in value.items()
            ):
                problems.append(f"{key!r} is missing or not a mapping of strings")
    if problems:
        raise ValueError(
            f"{path} is not a reproduction manifest ({'; '.join(problems)}); rerun "
            "`gvbench reproduce` to rewrite it"
        )
    return manifest


def build_report(folder: str | os.PathLike[str] = "results/report") -> Path:
    """Decide the studies' claims from the results in ``folder`` and write ``index.html``,
    ``figures/*.{png,pdf}``, ``tables/*.csv`` and ``claims.json`` there; returns the page."""
    from gvbench.harness.store import read

    folder = Path(folder)
    manifest_path = folder / MANIFEST
    if not manifest_path.is_file():
        raise FileNotFoundError(
            f"{manifest_path} not found: run `gvbench reproduce --out {folder}` first"
        )
    manifest = read_manifest(manifest_path)
    missing = [path for path in manifest["files"].values() if not (folder / path).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{manifest_path} names results that are not in {folder}: {', '.join(missing)}; "
            f"rerun `gvbench reproduce --out {folder}` to compute them"
        )
    data = {name: read(folder / path) for name, path in manifest["files"].items()}
    owned = _by_study(data, manifest_path)
    for owner, files in owned:  # every file checked before anything is drawn
        try:
            owner.check(files)
        except ValueError as error:
            raise ValueError(f"{manifest_path}: {error}") from None
    report = Report(folder)
    claims: list[Claim] = []
    for owner, files in owned:
        claims += owner.claims(files)
        owner.report(report, files)
    claims = family(claims)
    records = [c.record() for c in claims]
    claims_table = pd.DataFrame(records)
    write_bytes(claims_table.to_csv(index=False).encode(), folder / "tables" / "claims.csv")
    write_bytes(json.dumps(records, indent=1).encode(), folder / "claims.json")
    held = sum(c.verdict == HOLDS for c in claims)
    counts = claims_table["verdict"].value_counts().to_dict() if claims else {}
    summary = (
        f"Preset '{manifest['preset']}': {held} of {len(claims)} claims hold at this scale "
        f"({', '.join(f'{v} {k}' for k, v in counts.items())}). The claims are decided as "
        f"one family, Holm at family-wise error {FAMILY_ERROR:g}; 'not resolved' means this "
        "run is too small to tell."
    )
    page = render(
        "gvbench: Rao-Blackwellizing the Straight-Through Gumbel-Softmax Gradient Estimator, "
        "reproduced",
        summary,
        claims,
        {**manifest["provenance"], "report built by commit": provenance.git_commit()},
        report.sections,
    )
    return write_page(folder, page)


def _by_study(
    data: dict[str, xr.Dataset], manifest_path: Path
) -> list[tuple[study.Study, dict[str, xr.Dataset]]]:
    """The results grouped by the installed study that owns them, in the studies' order; a
    file no installed study owns is left out with a warning naming it."""
    studies = list(study.registered().values())
    groups: dict[str, tuple[study.Study, dict[str, xr.Dataset]]] = {}
    for name, ds in data.items():
        owner = next((s for s in studies if s.owns(name)), None)
        if owner is None:
            warnings.warn(
                f"{manifest_path}: files.{name} belongs to no installed experiment; it is "
                "left out of the report (install the package that wrote it)",
                stacklevel=3,
            )
            continue
        groups.setdefault(owner.name, (owner, {}))[1][name] = ds
    return sorted(groups.values(), key=lambda group: (group[0].order, group[0].name))
