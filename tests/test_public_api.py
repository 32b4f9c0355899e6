"""Each public surface's `__all__` pinned (STYLE 2.5, habit 1): adding a name to, or dropping one
from, what producers, plugins and operators import is a deliberate edit of this file.

Public, per README and docs: `spawner.client` (the typed producer client), `spawner.errors` (the
exception types a producer may catch by class), `spawner.models` (the agent config and records),
`tasks` (the Celery app of `celery -A tasks`) and `orchestrator_cli.output` (what a tool-group
plugin prints through, docs/worker-image.md). The packages `spawner` and `orchestrator_cli`
re-export nothing: `import spawner.errors` must stay standard-library only
(tests/test_architecture.py), and the agents' CLI must start without loading the spawner.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]

EXPECTED: dict[str, list[str]] = {
    "spawner": [],
    "spawner.client": [
        "CommandResult", "CreateResult", "DeleteResult", "FileResult", "ListResult", "LogsResult",
        "PendingTurn", "ReadFileResult", "SpawnerClient", "StatusResult",
    ],
    "spawner.errors": [
        "AgentGone", "AgentNotFound", "InvalidPath", "InvalidRequest", "PayloadTooLarge", "SpawnerError",
        "Unavailable",
    ],
    "spawner.models": [
        "AgentRecord", "AgentState", "AgentType", "Capability", "ContainerSpec", "ModelConfig", "Resources",
        "SpecFile", "TurnPlan", "TurnReply", "WorkerConfig", "describe_validation_error", "parse_config",
    ],
    "tasks": ["app"],
    "orchestrator_cli": [],
    "orchestrator_cli.output": [
        "CliError", "ConfigError", "RedisDeniedError", "UnavailableError", "UsageJsonError", "emit",
        "has_json_flag", "is_json", "json_flag", "json_option", "render_json",
    ],
}

# A fresh interpreter: importing `tasks` builds the Celery app and connects its signals, which
# this test process must not do.
_PROBE = """
import importlib, json, sys
out = {}
for name in sys.argv[1:]:
    module = importlib.import_module(name)
    names = getattr(module, "__all__", None)
    out[name] = {"all": names, "missing": [n for n in names or [] if not hasattr(module, n)]}
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def surfaces() -> dict[str, Any]:
    proc = subprocess.run([sys.executable, "-c", _PROBE, *EXPECTED], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    found: dict[str, Any] = json.loads(proc.stdout)
    return found


@pytest.mark.parametrize("module", sorted(EXPECTED))
def test_public_all_is_the_pinned_list(surfaces: dict[str, Any], module: str) -> None:
    assert surfaces[module]["all"] == EXPECTED[module]


@pytest.mark.parametrize("module", sorted(EXPECTED))
def test_every_public_name_exists(surfaces: dict[str, Any], module: str) -> None:
    assert surfaces[module]["missing"] == []
