"""`python -m orchestrator_cli` runs the same CLI as the `orchestrator` script."""

from __future__ import annotations

from orchestrator_cli.main import main

if __name__ == "__main__":
    main()
