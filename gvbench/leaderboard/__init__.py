"""``gvbench leaderboard``: every registered estimator on every registered task's column, at
matched budgets (see :mod:`gvbench.leaderboard.column` for what a study contributes)."""
