"""The categorical VAE of the coupled-estimator (Dong, Mnih & Tucker 2021; 20 latents × 10
categories) and ReinMax (Liu et al. 2023; 8 categories × 4 latents, its exact gradient
enumerated) protocols: protocols, model, enumeration, presets, experiment, leaderboard."""
