"""One small factory per capability (CONTRACT §3 `capabilities`): the Debian packages that
provide the tool, a command that proves it is installed, and the env it wants.

The packages are installed into a capability image built once per set (see
`spawner.factories.capability_image_tag`), never at container start: the agent runs as a
non-root user and, by default, without a network. Package names are Debian bookworm's.
Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from spawner.models import Capability

__all__ = ["CurlCapability", "GitCapability", "GithubCapability", "NodeCapability", "PythonCapability"]


@dataclass(frozen=True)
class GitCapability:
    capability: Capability = field(default=Capability.GIT, init=False)
    apt_packages: tuple[str, ...] = field(default=("git",), init=False)
    check_argv: tuple[str, ...] = field(default=("git", "--version"), init=False)

    def env(self) -> dict[str, str]:
        # A headless turn has nobody to type a password: fail at once instead of hanging.
        return {"GIT_TERMINAL_PROMPT": "0"}


@dataclass(frozen=True)
class CurlCapability:
    capability: Capability = field(default=Capability.CURL, init=False)
    apt_packages: tuple[str, ...] = field(default=("ca-certificates", "curl"), init=False)
    check_argv: tuple[str, ...] = field(default=("curl", "--version"), init=False)

    def env(self) -> dict[str, str]:
        return {}


@dataclass(frozen=True)
class NodeCapability:
    capability: Capability = field(default=Capability.NODE, init=False)
    apt_packages: tuple[str, ...] = field(default=("nodejs", "npm"), init=False)
    check_argv: tuple[str, ...] = field(default=("node", "--version"), init=False)

    def env(self) -> dict[str, str]:
        # npm's update check phones home on every run; the image pins npm.
        return {"NPM_CONFIG_UPDATE_NOTIFIER": "false"}


@dataclass(frozen=True)
class PythonCapability:
    capability: Capability = field(default=Capability.PYTHON, init=False)
    apt_packages: tuple[str, ...] = field(default=("python3", "python3-pip", "python3-venv"), init=False)
    check_argv: tuple[str, ...] = field(default=("python3", "--version"), init=False)

    def env(self) -> dict[str, str]:
        # Unbuffered, so a turn's output events arrive as the program prints, not at exit.
        return {"PYTHONUNBUFFERED": "1"}


@dataclass(frozen=True)
class GithubCapability:
    """The GitHub CLI. Credentials (GH_TOKEN / GITHUB_TOKEN) come through `secrets`."""

    capability: Capability = field(default=Capability.GITHUB, init=False)
    apt_packages: tuple[str, ...] = field(default=("gh",), init=False)
    check_argv: tuple[str, ...] = field(default=("gh", "--version"), init=False)

    def env(self) -> dict[str, str]:
        # gh would otherwise ask questions on a terminal that a headless turn does not have,
        # and check GitHub for a newer gh release on every run.
        return {"GH_PROMPT_DISABLED": "1", "GH_NO_UPDATE_NOTIFIER": "1"}
