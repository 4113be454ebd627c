"""Put the repository root and tools/ on sys.path so tools run from any CWD without installing pcdet."""
import os
import sys

TOOLS_DIR = os.path.dirname(os.path.abspath(__file__))
ROOT_DIR = os.path.dirname(TOOLS_DIR)
for _p in (TOOLS_DIR, ROOT_DIR):
    if _p not in sys.path:
        sys.path.insert(0, _p)
