"""tests/support/waiting.py: the suite's one way to wait for a state."""

from __future__ import annotations

import pytest

from tests.support.waiting import wait_for


def test_wait_for_returns_what_the_check_found_once_it_finds_it() -> None:
    answers = iter([None, [], {"state": "idle"}])
    assert wait_for("an answer", lambda: next(answers), interval=0) == {"state": "idle"}


def test_wait_for_fails_naming_the_state_that_never_came() -> None:
    with pytest.raises(AssertionError, match="waiting for the agent to be paused"):
        wait_for("the agent to be paused", lambda: False, timeout=0, interval=0)
