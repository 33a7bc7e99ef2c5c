"""Calibration: data loading, statistics collectors and the sequential runner."""
