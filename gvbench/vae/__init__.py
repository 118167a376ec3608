"""Discrete VAE on binarized MNIST (Paulus et al. 2021, §5.3): data, model, task, training."""
