"""The paper's toy problem as a study (§5.1 and Figure 1), and the field's estimators since
2017 on two toys: sweeps only, no training. Registered as the ``toy`` experiment."""
