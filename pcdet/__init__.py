"""pcdet: an OpenPCDet-compatible toolbox for LiDAR 3D detection and knowledge distillation.

Importing this package has no side effects: no torch, spconv or compiled extension is imported and no
subprocess is run (OpenPCDet shells out to ``git rev-parse`` here; we do not).
"""
from .version import __version__

__all__ = ['__version__']
