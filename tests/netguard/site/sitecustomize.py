"""Loaded by every Python the test suite starts (tests/netguard/plugin.py puts this folder on
PYTHONPATH): the network guard, spawner_netguard.py beside this file. The interpreter's own
sitecustomize, which this one hides, still runs after it."""
from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import sys

if os.environ.get("NETGUARD_LOG"):
    import spawner_netguard

    spawner_netguard.install()

_here = os.path.dirname(os.path.abspath(__file__))
_spec = importlib.machinery.PathFinder.find_spec(
    "sitecustomize", [p for p in sys.path if os.path.abspath(p or os.curdir) != _here])
if _spec is not None and _spec.loader is not None:
    _module = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(_module)
