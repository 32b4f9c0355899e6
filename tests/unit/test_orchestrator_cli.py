"""The in-container `orchestrator` CLI through click's CliRunner, with the environment passed in.

No Redis here: `respond` reaching Redis is tested in real containers by the integration suite.
The demo plugin (tests/plugins/orchestrator_demo_plugin) must be installed in the environment:
    pip install -e tests/plugins/orchestrator_demo_plugin
"""

from __future__ import annotations

import json
import socket
from datetime import UTC, datetime
from importlib.metadata import entry_points
from typing import Any

import click
import pytest
from click.testing import CliRunner, Result

from orchestrator_cli import catalog, client, output
from orchestrator_cli.main import (
    GuardedGroup,
    build_cli,
    describe_commands,
    iter_commands,
    load_plugins,
)

UNSET = None  # CliRunner removes a variable whose value is None
DEMO_PLUGIN = "tests/plugins/orchestrator_demo_plugin"


def run(
    cli: click.Group,
    args: list[str],
    *,
    allowed: str | None = UNSET,
    input: str | None = None,  # noqa: A002 - CliRunner.invoke's name for stdin
    **env: str | None,
) -> Result:
    full_env: dict[str, str | None] = {
        catalog.ENV_ALLOWED_TOOLS: allowed,
        catalog.ENV_AGENT_ID: UNSET,
        catalog.ENV_REDIS_URL: UNSET,
        catalog.ENV_COMMAND_ID: UNSET,
        **env,
    }
    return CliRunner().invoke(cli, args, env=full_env, input=input, prog_name="orchestrator")


def json_out(result: Result) -> dict[str, Any]:
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1, result.output
    body: dict[str, Any] = json.loads(lines[0])
    return body


@pytest.fixture(scope="module")
def cli() -> GuardedGroup:
    if not any(ep.name == "demo" for ep in entry_points(group=catalog.PLUGIN_ENTRY_POINT_GROUP)):
        pytest.fail(f"the demo plugin is not installed: pip install -e {DEMO_PLUGIN}")
    return build_cli()


# --- the guard -------------------------------------------------------------------------------
@pytest.mark.parametrize("allowed", [UNSET, "", "respond"])
def test_help_and_tools_are_always_allowed(cli: GuardedGroup, allowed: str | None) -> None:
    assert run(cli, ["--help"], allowed=allowed).exit_code == 0
    result = run(cli, ["tools", "--json"], allowed=allowed)
    assert result.exit_code == 0, result.output
    assert json_out(result)["ok"] is True


@pytest.mark.parametrize("allowed", [UNSET, "", " , ", "demo", "Respond"])
def test_denied_command_exits_77_with_the_json_error(
    cli: GuardedGroup, allowed: str | None
) -> None:
    result = run(cli, ["respond", "hi", "--json"], allowed=allowed)
    assert result.exit_code == catalog.EXIT_PERMISSION_DENIED == 77
    body = json_out(result)
    assert body["ok"] is False
    assert body["error"] == "permission_denied"
    assert body["command"] == "respond"
    assert catalog.ENV_ALLOWED_TOOLS in body["message"]


def test_denial_without_json_is_one_error_line_on_stderr(cli: GuardedGroup) -> None:
    result = run(cli, ["respond", "hi"], allowed="tools")
    assert result.exit_code == 77
    assert result.stdout == ""
    assert "not allowed" in result.stderr


def test_root_json_flag_shapes_the_denial_too(cli: GuardedGroup) -> None:
    result = run(cli, ["--json", "demo", "echo", "x"], allowed="respond")
    assert result.exit_code == 77
    assert json_out(result)["command"] == "demo.echo"


def test_allowed_respond_passes_the_guard_and_needs_its_environment(cli: GuardedGroup) -> None:
    result = run(cli, ["respond", "hi", "--json"], allowed="respond")
    assert result.exit_code == catalog.EXIT_CONFIG
    body = json_out(result)
    assert body["error"] == "config_error"
    assert catalog.ENV_AGENT_ID in body["message"] and catalog.ENV_REDIS_URL in body["message"]


@pytest.mark.parametrize("allowed", ["*", "demo", "demo.*", "demo.echo", "respond,demo.echo"])
def test_plugin_command_runs_when_a_pattern_covers_it(cli: GuardedGroup, allowed: str) -> None:
    result = run(cli, ["demo", "echo", "hello", "--json"], allowed=allowed)
    assert result.exit_code == 0, result.output
    assert json_out(result) == {"ok": True, "text": "hello"}
    assert run(cli, ["demo", "echo", "hello"], allowed=allowed).stdout == "hello\n"


@pytest.mark.parametrize("allowed", [UNSET, "", "respond", "demo.other", "demonstration"])
def test_plugin_command_is_denied_otherwise(cli: GuardedGroup, allowed: str | None) -> None:
    result = run(cli, ["demo", "echo", "hello", "--json"], allowed=allowed)
    assert result.exit_code == 77
    assert json_out(result)["command"] == "demo.echo"


def test_group_help_shows_only_to_an_agent_allowed_something_inside(cli: GuardedGroup) -> None:
    assert run(cli, ["demo", "--help"], allowed="demo.echo").exit_code == 0
    assert run(cli, ["demo", "--help"], allowed="respond").exit_code == 77
    assert run(cli, ["demo", "echo", "--help"], allowed="respond").exit_code == 77


def test_usage_errors_are_json_with_json(cli: GuardedGroup) -> None:
    result = run(cli, ["respond", "--json"], allowed="respond")
    assert result.exit_code == catalog.EXIT_USAGE
    assert json_out(result)["error"] == "usage_error"


def test_respond_refuses_an_empty_message_from_stdin(cli: GuardedGroup) -> None:
    result = run(cli, ["respond", "-", "--json"], allowed="respond", input="  \n")
    assert result.exit_code == catalog.EXIT_USAGE
    assert "empty" in json_out(result)["message"]


def test_respond_refuses_a_message_above_the_limit(cli: GuardedGroup) -> None:
    big = "x" * (catalog.RESPONSE_MAX_BYTES + 1)
    result = run(cli, ["respond", "-", "--json"], allowed="respond", input=big)
    assert result.exit_code == catalog.EXIT_USAGE


# --- the whole tree --------------------------------------------------------------------------
def _walk(group: click.Group, path: tuple[str, ...] = ()) -> list[tuple[str, click.Command]]:
    found = []
    for name, command in group.commands.items():
        found.append((".".join((*path, name)), command))
        if isinstance(command, click.Group):
            found += _walk(command, (*path, name))
    return found


def test_every_command_of_the_tree_takes_json(cli: GuardedGroup) -> None:
    assert output.has_json_flag(cli)
    missing = [name for name, command in _walk(cli) if not output.has_json_flag(command)]
    assert missing == []


def test_every_command_of_the_tree_is_guarded(cli: GuardedGroup) -> None:
    commands = describe_commands(cli)
    assert {"respond", "tools", "demo.echo"} <= {c.name for c in commands}
    for info in commands:
        argv = [*info.name.split("."), "--json", "--help"]
        if info.name in catalog.ALWAYS_ALLOWED:
            assert run(cli, argv).exit_code == 0
            continue
        denied = run(cli, argv, allowed="nothing-else")
        assert denied.exit_code == 77, info.name
        assert json_out(denied)["command"] == info.name
        assert run(cli, argv, allowed=info.name).exit_code == 0, info.name


def test_tools_lists_exactly_what_the_guard_lets_run(cli: GuardedGroup) -> None:
    for allowed in ["", "respond", "demo.*", "*"]:
        listed = {
            c["name"] for c in json_out(run(cli, ["tools", "--json"], allowed=allowed))["commands"]
        }
        runnable = {
            c.name
            for c in describe_commands(cli)
            if run(cli, [*c.name.split("."), "--help"], allowed=allowed).exit_code == 0
        }
        assert listed == runnable, allowed


def test_tools_reports_ignored_patterns(cli: GuardedGroup) -> None:
    body = json_out(
        run(cli, ["tools", "--json"], allowed="respond,Bad Pattern", **{catalog.ENV_AGENT_ID: "a1"})
    )
    assert body["agent_id"] == "a1"
    assert body["patterns"] == ["respond"]
    assert body["ignored_patterns"] == ["Bad Pattern"]


def test_iter_commands_gives_dotted_names_with_one_line_help(cli: GuardedGroup) -> None:
    pairs = dict(iter_commands(cli))
    assert pairs["demo.echo"] == "Print TEXT back."
    assert pairs["respond"].startswith("Send MESSAGE")
    assert all("\n" not in text for text in pairs.values())


# --- plugins ---------------------------------------------------------------------------------
def test_the_demo_entry_point_loads_as_a_click_group() -> None:
    groups, problems = load_plugins()
    assert isinstance(groups["demo"], click.Group)
    assert problems == []


def _ops_plugin(calls: list[str]) -> click.Group:
    @click.group("ops")
    def ops() -> None:
        calls.append("ops")

    @ops.group("db")
    def db() -> None:
        calls.append("db")

    @db.command("drop")
    def drop() -> None:  # deliberately plain click: no --json of its own
        calls.append("drop")
        click.echo("dropped")

    return ops


def test_nested_plugin_commands_are_checked_by_their_full_path_before_any_callback() -> None:
    calls: list[str] = []
    cli = build_cli({"ops": _ops_plugin(calls)})
    for allowed in ["ops", "ops.*", "ops.db", "*"]:
        assert run(cli, ["ops", "db", "drop"], allowed=allowed).exit_code == 0, allowed
    assert calls == ["ops", "db", "drop"] * 4
    calls.clear()
    for allowed in ["ops.other", "respond", ""]:
        result = run(cli, ["ops", "db", "drop", "--json"], allowed=allowed)
        assert result.exit_code == 77
        assert json_out(result)["command"] == "ops.db.drop"
    assert calls == []


def test_plugin_commands_without_json_get_the_shared_flag() -> None:
    cli = build_cli({"ops": _ops_plugin([])})
    assert run(cli, ["ops", "db", "drop", "--json"], allowed="ops").exit_code == 0


def test_a_group_that_runs_by_itself_needs_its_own_pattern() -> None:
    @click.group("status", invoke_without_command=True)
    def status() -> None:
        click.echo("status ran")

    @status.command("detail")
    def detail() -> None:
        click.echo("detail")

    cli = build_cli({"status": status})
    assert run(cli, ["status"], allowed="status.detail").exit_code == 77
    assert run(cli, ["status"], allowed="status").stdout == "status ran\n"
    assert "status" in {c.name for c in describe_commands(cli)}


def test_unusable_plugins_are_skipped_with_a_reason() -> None:
    @click.group(chain=True)
    def chained() -> None:
        pass

    plugins: dict[str, Any] = {
        "Bad": click.Group("bad"),
        "respond": click.Group("respond"),
        "plain": click.Command("plain"),
        "chained": chained,
    }
    cli = build_cli(plugins)
    assert set(cli.commands) == {"context", "respond", "tools"}
    assert cli.commands["respond"] is not plugins["respond"]  # the built-in, not the impostor
    assert cli.commands["respond"].callback is not None
    assert len(cli.plugin_problems) == 4
    result = run(cli, ["tools"])
    assert "warning: plugin 'plain' skipped" in result.stderr


# --- contract drift --------------------------------------------------------------------------
def test_stream_and_channel_names_equal_the_spawners() -> None:
    from spawner import limits, names

    for agent_id in ["a1", "0f3c9e"]:
        assert catalog.agent_events_key(agent_id) == names.agent_events_key(agent_id)
        for event_type in ["response", "status", "output"]:
            assert catalog.agent_channel(agent_id, event_type) == names.agent_channel(
                agent_id, event_type
            )
    assert catalog.EVENT_STREAM_MAXLEN == limits.EVENT_STREAM_MAXLEN


def test_response_event_has_the_contract_fields_and_no_id() -> None:
    now = datetime(2026, 1, 2, 3, 4, 5, 678_000, tzinfo=UTC)
    event = client.build_response_event("a1", "done", command_id=None, now=now)
    assert event == {
        "type": "response",
        "agent_id": "a1",
        "ts": "2026-01-02T03:04:05.678Z",
        "message": "done",
        "via": "respond",
    }
    with_turn = client.build_response_event("a1", "done", command_id="c9", now=now)
    assert with_turn["command_id"] == "c9"
    assert "id" not in with_turn
    question = client.build_response_event("a1", "which?", command_id=None, now=now, expects_reply=True)
    assert question["expects_reply"] is True


@pytest.mark.parametrize(("flag", "line"), [
    ([], {"message": "on it"}),
    (["-q"], {"message": "on it", "expects_reply": True}),
    (["--expect-reply"], {"message": "on it", "expects_reply": True}),
])
def test_respond_relays_a_question_through_the_turn_marked_as_one(cli: GuardedGroup, tmp_path, flag, line) -> None:
    relay = tmp_path / "responses"
    relay.touch()
    result = run(cli, ["respond", "on it", *flag, "--json"], allowed="respond",
                 **{catalog.ENV_RESPONSE_FILE: str(relay)})
    assert result.exit_code == 0, result.output
    assert json_out(result)["relayed"] is True
    assert [json.loads(x) for x in relay.read_text().splitlines()] == [line]


def test_respond_during_a_turn_is_relayed_even_with_a_redis_url(cli: GuardedGroup, tmp_path) -> None:
    """On network `host` the agent has ORCHESTRATOR_REDIS_URL too; during a turn its answer still goes
    through the turn (checked, sized and counted by the fleet), never straight to Redis."""
    relay = tmp_path / "responses"
    relay.touch()
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # nothing listens there: a write to Redis would fail as unreachable
    result = run(cli, ["respond", "from a turn", "--json"], allowed="respond",
                 **{catalog.ENV_RESPONSE_FILE: str(relay), catalog.ENV_AGENT_ID: "a1",
                    catalog.ENV_REDIS_URL: f"redis://agent-a1:pw@127.0.0.1:{port}/0", catalog.ENV_COMMAND_ID: "c1"})
    assert result.exit_code == 0, result.output
    assert json_out(result) == {"ok": True, "agent_id": "a1", "id": None, "command_id": "c1", "relayed": True}
    assert [json.loads(x) for x in relay.read_text().splitlines()] == [{"message": "from a turn"}]
