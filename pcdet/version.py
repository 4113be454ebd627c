"""Single source of the package version (read by setup.py without importing pcdet)."""
__version__ = '0.1.0'
