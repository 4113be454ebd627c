"""Evaluation utilities for tools/test.py and evaluation after training."""
