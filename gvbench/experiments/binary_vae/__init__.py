"""DisARM's binary VAE and sigmoid belief nets (Dong, Mnih & Tucker 2020): model, presets,
experiment and leaderboard columns; registered as the ``binary_vae`` experiment."""
