"""ListOps latent parse trees (Paulus et al. 2021, §5.2): data, model, harness task, training."""
