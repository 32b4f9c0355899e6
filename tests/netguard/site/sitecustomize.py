"""Loaded by every Python the test suite starts (tests/conftest.py puts this folder on PYTHONPATH):
the network guard, spawner_netguard.py beside this file."""

import os

if os.environ.get("NETGUARD_LOG"):
    import spawner_netguard

    spawner_netguard.install()
