"""spawner.factories.instructions: the instruction file lists exactly what the guard lets run."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from orchestrator_cli import catalog
from orchestrator_cli.main import CommandInfo, build_cli, describe_commands
from spawner.factories.instructions import SECTION_HEADING, installed_commands, render_instructions

FAKE_TREE = (
    CommandInfo("demo.echo", "Print TEXT back.", "orchestrator demo echo [OPTIONS] TEXT"),
    CommandInfo("respond", "Send MESSAGE.", "orchestrator respond [OPTIONS] MESSAGE"),
    CommandInfo("tools", "List what you may run.", "orchestrator tools [OPTIONS]"),
)


def listed(text: str, tree: tuple[CommandInfo, ...] = FAKE_TREE) -> set[str]:
    return {c.name for c in tree if f"`{c.usage}`" in text}


def test_user_instructions_come_first_then_the_generated_section() -> None:
    text = render_instructions(
        "# Project\n\nUse pytest.\n\n", ("respond",), "CLAUDE.md", commands=FAKE_TREE
    )
    assert text.startswith("# Project\n\nUse pytest.\n\n" + SECTION_HEADING)
    assert "CLAUDE.md" in text
    assert text.endswith("\n")


@pytest.mark.parametrize("instructions", [None, "", "  \n"])
def test_without_user_instructions_only_the_section_is_written(instructions: str | None) -> None:
    text = render_instructions(instructions, ("respond",), "AGENTS.md", commands=FAKE_TREE)
    assert text.startswith(SECTION_HEADING)


@pytest.mark.parametrize(
    ("allowed", "expected"),
    [
        ((), {"tools"}),
        (("respond",), {"respond", "tools"}),
        (("demo.*",), {"demo.echo", "tools"}),
        (("demo.echo", "respond"), {"demo.echo", "respond", "tools"}),
        (("*",), {"demo.echo", "respond", "tools"}),
        (("Bad",), {"tools"}),
    ],
)
def test_the_section_lists_exactly_the_allowed_commands(
    allowed: tuple[str, ...], expected: set[str]
) -> None:
    assert listed(render_instructions(None, allowed, "CLAUDE.md", commands=FAKE_TREE)) == expected


def test_with_nothing_allowed_the_section_says_so() -> None:
    text = render_instructions("Be brief.", (), "AGENTS.md", commands=FAKE_TREE)
    assert "No orchestrator tool command is allowed" in text
    assert "always allowed" in text


def test_every_command_of_the_real_tree_appears_when_everything_is_allowed() -> None:
    tree = tuple(describe_commands(build_cli()))
    assert {c.name for c in tree} >= {"respond", "tools", "demo.echo"}
    assert installed_commands() == tree
    text = render_instructions(None, ("*",), "CLAUDE.md")
    assert listed(text, tree) == {c.name for c in tree}


@pytest.mark.parametrize("allowed", [(), ("respond",), ("demo",), ("demo.echo", "respond"), ("*",)])
def test_the_section_matches_what_orchestrator_tools_prints(allowed: tuple[str, ...]) -> None:
    env = {catalog.ENV_ALLOWED_TOOLS: ",".join(allowed)}
    result = CliRunner().invoke(build_cli(), ["tools", "--json"], env=env)
    from_cli = {c["usage"] for c in json.loads(result.stdout)["commands"]}
    text = render_instructions(None, allowed, "CLAUDE.md")
    tree = installed_commands()
    assert {c.usage for c in tree if f"`{c.usage}`" in text} == from_cli
