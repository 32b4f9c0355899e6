"""The benchmark: the fleet against the raw Docker SDK, on this machine (`python -m bench`).

Not shipped with the package (setuptools includes spawner*, tasks*, orchestrator_cli* only) and
never imported by it. See docs/benchmarks.md for the latest full run and what it measures.
"""
