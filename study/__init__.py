"""Activation × optimizer × depth study of plain CNNs: training, diagnostics, tracking, report."""

__version__ = "0.1.0"
