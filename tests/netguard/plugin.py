"""The network guard as a pytest plugin (tests/conftest.py loads it): a test fails when it, a
fixture, or any Python process the suite started tried to reach an address off this machine.

On import it installs the guard (site/spawner_netguard.py) in this process and puts site/ on
PYTHONPATH with NETGUARD_LOG naming this session's log, so every subprocess started from here on
(workers, `spawner up`, the CLI, the benchmark) carries the guard too. After each test the log's
new lines fail that test; lines written between tests fail the session at its end.
"""

from __future__ import annotations

import atexit
import json
import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

SITE = Path(__file__).resolve().with_name("site")
#: One log per pytest process: sessions of other people in the same tree never mix.
LOG = Path(os.environ.get("NETGUARD_DIR") or Path(__file__).resolve().parents[2] / "test-output") / \
    f"netguard-{uuid.uuid4().hex[:12]}.log"


def _activate() -> None:
    LOG.parent.mkdir(parents=True, exist_ok=True)
    LOG.write_bytes(b"")
    os.environ["NETGUARD_LOG"] = str(LOG)
    parts = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if str(SITE) not in parts:
        os.environ["PYTHONPATH"] = os.pathsep.join([str(SITE), *parts])
    if str(SITE) not in sys.path:
        sys.path.insert(0, str(SITE))
    import spawner_netguard
    spawner_netguard.install()
    atexit.register(_drop_unless_a_test_failed)


def _drop_unless_a_test_failed() -> None:
    """Kept (in test-output/) only when a refusal failed a test, not for those taken on purpose."""
    if not _REFUSALS.failed:
        LOG.unlink(missing_ok=True)


_activate()


class Refusals:
    """The session's log of refusals, read from where the last look stopped."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.failed = False

    def take(self) -> list[dict[str, Any]]:
        """Every refusal logged since the last take, by any process of this session."""
        with open(self.path, "rb") as fh:
            fh.seek(self.offset)
            data = fh.read()
        complete = data[:data.rfind(b"\n") + 1]  # a line still being written waits for the next look
        self.offset += len(complete)
        return [json.loads(line) for line in complete.splitlines() if line.strip()]


_REFUSALS = Refusals(LOG)


def _explain(found: list[dict[str, Any]]) -> str:
    _REFUSALS.failed = True
    return "a connection or lookup off this machine was refused (tests may reach only 127.0.0.0/8):\n" + \
        "\n".join(f"  pid {r['pid']} {' '.join(r['argv'])}: {r['refused']}\n    " + "\n    ".join(r["where"])
                  for r in found)


@pytest.fixture
def netguard_refusals() -> Refusals:
    """For the guard's own tests: take the refusals they cause on purpose, so they do not fail."""
    return _REFUSALS


@pytest.fixture(autouse=True)
def _netguard_per_test() -> Iterator[None]:
    before = _REFUSALS.take()
    if before:
        pytest.fail("before this test: " + _explain(before))
    yield
    if found := _REFUSALS.take():
        pytest.fail(_explain(found))


@pytest.fixture(scope="session", autouse=True)
def _netguard_per_session() -> Iterator[None]:
    yield
    if found := _REFUSALS.take():
        pytest.fail("during the session's teardown: " + _explain(found))
