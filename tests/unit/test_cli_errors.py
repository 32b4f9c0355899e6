"""The `spawner` CLI's error mapping: which failure gives which exit code and one-line message."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner
from kombu.exceptions import OperationalError

from spawner import errors
from spawner.cli import cli
from spawner.cli_errors import BadSetting, CliError, Interrupted, UsageFailed, error_for

URL = "redis://:s3cret@127.0.0.1:6379/0"


@pytest.mark.parametrize(("exc", "exit_code", "line"), [
    (errors.AgentNotFound("no agent 'ag-x'; list agents with `spawner ls`"), 1,
     "AgentNotFound: no agent 'ag-x'; list agents with `spawner ls`"),
    (errors.InvalidRequest("invalid arguments:\n  tail: must be >= 0"), 1,
     "InvalidRequest: invalid arguments: tail: must be >= 0"),
    (OperationalError("Error 111 connecting"), 1,
     "Unavailable: cannot reach the broker at redis://127.0.0.1:6379/0 (Error 111 connecting); start the fleet "
     "with `spawner up`, or point SPAWNER_REDIS_URL at it"),
    (TimeoutError(), 1, "Timeout: no result in time; the task may still run: check `spawner ls` and the worker "
                        "logs, or raise --timeout"),
    (errors.Unavailable("Redis cannot be reached while reading"), 1,
     "Unavailable: Redis cannot be reached while reading (SPAWNER_REDIS_URL=redis://127.0.0.1:6379/0; start the "
     "fleet with `spawner up`)"),
    (click.UsageError("No such option: --bogus"), 2, "UsageError: No such option: --bogus"),
    (BadSetting("invalid settings: SPAWNER_WORKER_POOL: Input should be 'threads', 'prefork' or 'solo'"), 2,
     "SettingsError: invalid settings: SPAWNER_WORKER_POOL: Input should be 'threads', 'prefork' or 'solo'; fix "
     "the variable or unset it"),
])
def test_each_failure_maps_to_its_exit_code_and_one_line(exc, exit_code, line):
    error = error_for(exc, redis_url=URL)
    assert isinstance(error, click.ClickException)
    assert (error.exit_code, error.format_message()) == (exit_code, line)
    assert "\n" not in error.format_message() and "s3cret" not in error.format_message()


def test_the_cli_errors_carry_their_own_exit_codes():
    assert (CliError("Timeout", "x").exit_code, UsageFailed("x").exit_code, BadSetting("x").exit_code,
            Interrupted("x").exit_code) == (1, 2, 2, 130)
    assert error_for(Interrupted("stopped"), redis_url=URL).exit_code == 130  # passes through unchanged


def test_the_cli_prints_usage_errors_and_bad_settings_in_one_line():
    runner = CliRunner()
    unknown = runner.invoke(cli, ["zzz"], env={"SPAWNER_WORKER_POOL": None})
    assert unknown.exit_code == 2
    assert unknown.output.splitlines() == ["error: UsageError: No such command 'zzz'. (see `cli --help`)"]
    bad = runner.invoke(cli, ["ls"], env={"SPAWNER_WORKER_POOL": "gevent"})
    assert bad.exit_code == 2
    assert bad.output.splitlines() == [
        "error: SettingsError: invalid settings: SPAWNER_WORKER_POOL: Input should be 'threads', 'prefork' or "
        "'solo'; fix the variable or unset it"]


def test_spawner_up_takes_an_option_not_given_from_its_setting_and_checks_it_before_starting():
    runner = CliRunner()
    from_env = runner.invoke(cli, ["up"], env={"SPAWNER_FLOWER_ADDRESS": "0.0.0.0"})
    assert from_env.exit_code == 2
    assert from_env.output.startswith("error: UsageError: Flower would listen on 0.0.0.0 with no credentials")
    flag_wins = runner.invoke(cli, ["up", "--flower-port", "7000", "--metrics-port", "7000"],
                              env={"SPAWNER_FLOWER_PORT": "5555"})
    assert flag_wins.exit_code == 2 and "--flower-port and --metrics-port must differ" in flag_wins.output
    bad = runner.invoke(cli, ["up"], env={"SPAWNER_METRICS_PORT": "0"})
    assert bad.exit_code == 2 and "SPAWNER_METRICS_PORT: Input should be greater than or equal to 1" in bad.output
