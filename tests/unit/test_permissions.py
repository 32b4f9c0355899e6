"""orchestrator_cli.permissions: parsing and matching of ORCHESTRATOR_ALLOWED_TOOLS (pure)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestrator_cli import catalog
from orchestrator_cli.permissions import Allowed, allows_any_under, is_allowed, parse_allowed

NAMES = ["respond", "tools", "demo", "demo.echo", "demo.other", "demonstration.echo", "ops.db.drop"]
names = st.from_regex(r"[a-z][a-z0-9_-]{0,8}(\.[a-z][a-z0-9_-]{0,8}){0,2}", fullmatch=True)


@pytest.mark.parametrize("raw", [None, "", "   ", ",", " , ,, "])
def test_unset_or_empty_allows_nothing(raw: str | None) -> None:
    allowed = parse_allowed(raw)
    assert allowed == Allowed()
    assert not any(is_allowed(allowed, name) for name in NAMES)


@given(names)
def test_empty_list_denies_every_name(name: str) -> None:
    assert not is_allowed(parse_allowed(""), name)


@given(names)
def test_star_allows_every_name(name: str) -> None:
    assert is_allowed(parse_allowed("*"), name)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("respond", {"respond"}),
        ("demo", {"demo", "demo.echo", "demo.other"}),
        ("demo.*", {"demo", "demo.echo", "demo.other"}),
        ("demo.echo", {"demo.echo"}),
        ("respond,demo.echo", {"respond", "demo.echo"}),
        ("ops", {"ops.db.drop"}),
        ("ops.db", {"ops.db.drop"}),
        ("*", set(NAMES)),
    ],
)
def test_patterns_cover_exactly_their_commands(raw: str, expected: set[str]) -> None:
    allowed = parse_allowed(raw)
    assert {name for name in NAMES if is_allowed(allowed, name)} == expected


def test_group_pattern_does_not_cover_a_group_that_merely_shares_its_prefix() -> None:
    assert not is_allowed(parse_allowed("demo"), "demonstration.echo")
    assert not is_allowed(parse_allowed("demo.*"), "demonstration")


def test_entries_are_trimmed_and_duplicates_collapse_in_order() -> None:
    allowed = parse_allowed(" respond , demo.* ,respond,")
    assert allowed.patterns == ("respond", "demo.*")
    assert allowed.invalid == ()


@pytest.mark.parametrize(
    "bad", ["Respond", "demo.echo.x", "*.echo", "de mo", ".*", "demo.", "1abc", "demo.**"]
)
def test_malformed_patterns_are_ignored_and_never_widen_access(bad: str) -> None:
    allowed = parse_allowed(f"{bad},respond")
    assert allowed.patterns == ("respond",)
    assert allowed.invalid == (bad,)
    assert {name for name in NAMES if is_allowed(allowed, name)} == {"respond"}


def test_allows_everything_only_with_an_explicit_star() -> None:
    assert parse_allowed("*").allows_everything
    assert not parse_allowed("respond,demo").allows_everything
    assert not parse_allowed(None).allows_everything


@pytest.mark.parametrize(
    ("raw", "group", "expected"),
    [
        ("demo.echo", "demo", True),
        ("demo", "demo", True),
        ("*", "demo", True),
        ("respond", "demo", False),
        ("demonstration.echo", "demo", False),
        ("", "demo", False),
    ],
)
def test_allows_any_under_a_group(raw: str, group: str, expected: bool) -> None:
    assert allows_any_under(parse_allowed(raw), group) is expected


def test_pattern_grammar_is_the_one_the_spawner_validates_configs_with() -> None:
    from spawner import models

    assert catalog.TOOL_PATTERN_RE.pattern == models.TOOL_PATTERN_RE.pattern
