"""Polynomial programming (ReinMax) and the quadratic toy (REBAR, RELAX, ARM): binary
variables whose expected loss and gradient are exact by independence. Registered as the
``poly`` experiment (``pyproject.toml``); see :mod:`gvbench.experiments.poly.experiment`."""

from gvbench.experiments.poly.experiment import POLY, PolyConfig, Polynomial, PolyOptions
from gvbench.experiments.poly.model import PolynomialProgram

__all__ = ["POLY", "PolyConfig", "PolyOptions", "Polynomial", "PolynomialProgram"]
