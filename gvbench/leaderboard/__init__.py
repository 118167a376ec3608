"""``gvbench leaderboard``: every registered estimator on every registered task's column, at
matched budgets (see :mod:`gvbench.leaderboard.column` for what a study contributes).

- :mod:`~gvbench.leaderboard.column`: what a study contributes (Column, GradientCheck,
  TrainingProtocol, DirectionClaim);
- :mod:`~gvbench.leaderboard.rows`: the columns of a preset, and the estimators of each;
- :mod:`~gvbench.leaderboard.measures`: the measures, declared once, and the long table;
- :mod:`~gvbench.leaderboard.gradients`: a column's gradient quality (a harness sweep);
- :mod:`~gvbench.leaderboard.training`: a column's training outcome (search, then seeds);
- :mod:`~gvbench.leaderboard.ranking`: each column's best, marked only where resolved;
- :mod:`~gvbench.leaderboard.claims`: the columns' direction claims, decided with SEs;
- :mod:`~gvbench.leaderboard.tables`, :mod:`~gvbench.leaderboard.figures`,
  :mod:`~gvbench.leaderboard.page`: the CSV files, figures and HTML page;
- :mod:`~gvbench.leaderboard.presets`: ``tiny``, ``cpu``, ``paper``;
- :mod:`~gvbench.leaderboard.fill`: all of it into one folder, resumable.
"""
