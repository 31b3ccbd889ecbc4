"""Kizuna (絆): an open city OS for municipalities that share one platform."""

__version__ = "0.1.0"
