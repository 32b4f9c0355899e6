"""Import-direction rules (STYLE §2.3), checked by importing each module in a fresh interpreter.

A fresh process is the only honest check: in this one, pytest and other tests have already
imported everything.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# (module, packages or modules it must not load, directly or through anything it imports)
FORBIDDEN = [
    # Runs inside agent containers, which have neither the spawner nor its dependencies; redis
    # too, because the spawner imports main to walk the command tree (only `respond` needs it).
    ("orchestrator_cli.main", {"spawner", "tasks", "celery", "docker", "pydantic", "redis"}),
    ("orchestrator_cli.commands.respond", {"spawner", "tasks", "celery", "docker", "redis"}),
    ("spawner.models", {"docker", "redis", "celery", "kombu"}),
    ("spawner.factories", {"docker", "redis", "celery", "kombu"}),
    ("spawner.factories.instructions", {"docker", "redis", "celery", "kombu"}),
    # the service's metrics calls must not pull an adapter into it; the CLI stays quick to start
    ("spawner.service", {"docker", "redis", "celery", "kombu", "prometheus_client"}),
    ("spawner.cli", {"docker", "redis", "celery", "kombu", "prometheus_client"}),
    # the bridge's translation of the predecessor's protocol is pure (its edge is bridge/streams.py)
    ("spawner.bridge.protocol", {"docker", "redis", "celery", "kombu", "pydantic"}),
    # the producer's client stands on the contract (results, ids, the event stream), not on the
    # domain: never the service, the store that writes, the models or pydantic
    ("spawner.client", {"spawner.service", "spawner.state.store", "spawner.models", "docker", "pydantic"}),
    # the runner's wire format and the calls over it are pure: the Docker edge is backend/docker.py
    ("spawner.runner_protocol", {"docker", "redis", "celery", "kombu"}),
    ("spawner.backend.runner_calls", {"docker", "redis", "celery", "kombu"}),
    ("spawner.backend.daemons", {"docker", "redis", "celery", "kombu"}),
]
# Modules that must load nothing beyond the standard library and their own package.
STDLIB_ONLY = ["orchestrator_cli.catalog", "spawner.errors", "spawner.names", "spawner.metrics", "spawner.fleet",
               "spawner.ids"]


def loaded_modules(module: str, *, top_level: bool = True) -> set[str]:
    code = (
        "import importlib, json, sys; before = set(sys.modules); "
        f"importlib.import_module({module!r}); "
        "print(json.dumps(sorted(set(sys.modules) - before)))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return {name.split(".")[0] if top_level else name for name in json.loads(proc.stdout)}


@pytest.mark.parametrize(("module", "forbidden"), FORBIDDEN, ids=[m for m, _ in FORBIDDEN])
def test_module_does_not_import_forbidden_packages(module: str, forbidden: set[str]) -> None:
    loaded = loaded_modules(module, top_level=False)
    assert sorted(m for m in loaded if any(m == f or m.startswith(f + ".") for f in forbidden)) == []


@pytest.mark.parametrize("module", STDLIB_ONLY)
def test_module_imports_only_the_standard_library(module: str) -> None:
    own = module.split(".", maxsplit=1)[0]
    foreign = {m for m in loaded_modules(module) if m != own and m not in sys.stdlib_module_names}
    # Not the module's doing: setuptools' .pth file loads `_distutils_hack` into every
    # interpreter, and `sysconfig` loads its generated `_sysconfigdata_*` module.
    foreign = {m for m in foreign if m != "_distutils_hack" and not m.startswith("_sysconfigdata")}
    assert sorted(foreign) == []


#: The thin edges (STYLE §2.1): the Docker edge (docker.py and its docker_calls.py) and one module per package for Redis.
EDGES = {"docker": {"spawner/backend/docker.py", "spawner/backend/docker_calls.py"},
         "redis": {"spawner/state/redis.py", "orchestrator_cli/client.py"}}


@pytest.mark.parametrize("package", sorted(EDGES))
def test_only_the_edge_modules_import_docker_or_redis(package: str) -> None:
    import ast

    importers = set()
    for path in [ROOT / "celeryconfig.py", *(ROOT / "spawner").rglob("*.py"), *(ROOT / "tasks").rglob("*.py"),
                 *(ROOT / "orchestrator_cli").rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
            if any(n == package or n.startswith(package + ".") for n in names):
                importers.add(str(path.relative_to(ROOT)))
    assert importers == EDGES[package]


#: STYLE 2.1: a module stays under about 400 lines; past that it holds more than one concept.
MAX_MODULE_LINES = 400
#: Modules still over the limit, each with the reason it is allowed for now (empty is the goal).
OVER_THE_LIMIT: dict[str, str] = {}


def test_no_module_is_over_400_lines() -> None:
    sizes = {str(path.relative_to(ROOT)): len(path.read_text().splitlines())
             for package in ("spawner", "tasks", "orchestrator_cli") for path in (ROOT / package).rglob("*.py")}
    sizes["celeryconfig.py"] = len((ROOT / "celeryconfig.py").read_text().splitlines())
    over = {path: lines for path, lines in sorted(sizes.items())
            if lines > MAX_MODULE_LINES and path not in OVER_THE_LIMIT}
    assert over == {}
    # an allowance outlives its module's split only by mistake
    assert sorted(path for path in OVER_THE_LIMIT if sizes.get(path, 0) <= MAX_MODULE_LINES) == []
