"""WorkerConfig -> the container to create and its runner init, and what a config needs from the image.

`plan_create` is the single pure entry point from an agent's config to what `create` executes:
the container spec the backend creates (`build_spec`, labels and all) and the init request the
runner inside gets. The caller passes in everything that is not in the config (ids, the clock's
reading, resolved secrets, the image), so the result is a function of its arguments and is
testable with `==`. Nothing here imports docker, redis or celery, reads the environment or the clock.

Where the secrets go: `env_vars` values and resolved `secrets` land only in
`ContainerSpec.secret_env` (a file the runner loads per turn), never in `env` (visible to
`docker inspect`) nor in the labels (the config label is `WorkerConfig.redacted()`).
"""

from __future__ import annotations

import hashlib
import json
import re
import shlex
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from orchestrator_cli import catalog
from spawner import names
from spawner.factories.instructions import render_instructions
from spawner.factories.registry import agent_factory, capability_factory
from spawner.models import Capability, ContainerSpec, Skill, SpecFile, WorkerConfig
from spawner.runner_protocol import InitRequest

__all__ = [
    "CAPABILITY_IMAGE_REPOSITORY",
    "CreateInputs",
    "CreatePlan",
    "agent_factory",
    "build_spec",
    "capability_checks",
    "capability_factory",
    "capability_image_tag",
    "git_identity_env",
    "parse_apt_sources",
    "plan_create",
    "required_capability_packages",
    "skill_file",
]

#: Repository of the images that add a capability set's apt packages to the worker image.
CAPABILITY_IMAGE_REPOSITORY = "workers-spawner/worker-caps"


@dataclass(frozen=True)
class CreateInputs:
    """What `create` resolved before planning: everything of an agent's container not in its config."""

    agent_id: str
    image: str
    network_mode: str
    #: epoch seconds (the clock's reading, taken by the caller)
    created_at: float
    #: resolved `secrets` and per-agent credentials; they win over `env_vars` of the same name
    secret_values: Mapping[str, str]
    #: the create call's `context` (each key becomes a variable, CONTRACT §8.3)
    context: Mapping[str, str]
    ready_timeout_seconds: int
    #: the operator's labels (SPAWNER_EXTRA_LABELS); never the spawner's own label names
    extra_labels: Mapping[str, str] = field(default_factory=dict)
    #: this fleet's identity on the engine ("" = no fleet label)
    fleet_id: str = ""


@dataclass(frozen=True)
class CreatePlan:
    """What `create` executes: the container to create, then the runner's init inside it."""

    spec: ContainerSpec
    init: InitRequest


def plan_create(config: WorkerConfig, inputs: CreateInputs) -> CreatePlan:
    """The container of one agent (labels included) and the init its runner gets after start."""
    agent = agent_factory(config.agent)
    instructions = None
    if agent.instruction_file is not None:
        instructions = render_instructions(config.instructions, config.allowed_tools, agent.instruction_file)
    spec = build_spec(config, agent_id=inputs.agent_id, image=inputs.image, network_mode=inputs.network_mode,
                      created_at=inputs.created_at, secret_values=dict(inputs.secret_values),
                      orchestrator_env=catalog.context_env(dict(inputs.context)), instructions_text=instructions,
                      extra_labels=inputs.extra_labels, fleet_id=inputs.fleet_id)
    init = InitRequest(files=spec.files, ready_argv=spec.ready_argv,
                       ready_timeout_seconds=inputs.ready_timeout_seconds, secret_env=spec.secret_env)
    return CreatePlan(spec=spec, init=init)


def build_spec(
    config: WorkerConfig,
    *,
    agent_id: str,
    image: str,
    network_mode: str,
    created_at: float,
    secret_values: dict[str, str],
    orchestrator_env: dict[str, str],
    instructions_text: str | None,
    extra_labels: Mapping[str, str] | None = None,
    fleet_id: str = "",
) -> ContainerSpec:
    """The container of one agent.

    `created_at` is epoch seconds (stored in the label as `repr(float)`). `secret_values` are
    the values the agent gets besides `config.env_vars` (resolved `secrets`, per-agent
    credentials); they win over an `env_vars` entry of the same name. `instructions_text` is
    the whole instruction file, written to /workspace/<file> for agents that have one.
    `extra_labels` (the operator's) never override the spawner's own; `fleet_id` adds the
    fleet label.
    """
    agent = agent_factory(config.agent)
    env: dict[str, str] = dict(agent.env())
    for capability in config.capabilities:
        env.update(capability_factory(capability).env())
    if config.model is not None:  # only agents with model_env pass WorkerConfig's check
        env.update(agent.model_env(config.model))  # type: ignore[attr-defined]
    env.update(git_identity_env(config, agent_id))
    env.update(orchestrator_env)
    # Set last, so nothing above can widen the allow-list or change the agent's identity.
    env[catalog.ENV_ALLOWED_TOOLS] = ",".join(config.allowed_tools)
    env[catalog.ENV_AGENT_ID] = agent_id

    files: tuple[SpecFile, ...] = ()
    if agent.instruction_file is not None and instructions_text is not None:
        files = (SpecFile(path=f"{names.WORKSPACE}/{agent.instruction_file}",
                          content=instructions_text.encode("utf-8"), mode=0o644),)
    if config.model is not None:  # how the CLI is pointed at the gateway, where env is not enough
        files += agent.model_files(config.model)  # type: ignore[attr-defined]
    if agent.skills_dir is not None:
        files += tuple(SpecFile(path=f"{agent.skills_dir}/{skill.name}/SKILL.md", content=skill_file(skill), mode=0o644)
                       for skill in config.skills)

    return ContainerSpec(
        image=image,
        name=names.container_name(agent_id),
        labels={
            **(extra_labels or {}),
            names.LABEL_MANAGED: "true",
            names.LABEL_AGENT_ID: agent_id,
            names.LABEL_AGENT_TYPE: config.agent.value,
            names.LABEL_CREATED_AT: repr(float(created_at)),
            # without the instructions: a label is no place for up to 200 KB (the file is in the workspace)
            names.LABEL_CONFIG: json.dumps({**config.redacted(), "instructions": None,
                                            "skills": [s.name for s in config.skills]},
                                           separators=(",", ":"), sort_keys=True),
            **({names.LABEL_FLEET: fleet_id} if fleet_id else {}),
        },
        env=env,
        secret_env={**config.env_vars, **secret_values},
        user=names.CONTAINER_USER,
        working_dir=names.WORKSPACE,
        network_mode=network_mode,
        memory_bytes=config.resources.memory_mb * 1024 * 1024,
        nano_cpus=round(config.resources.cpus * 1e9),  # round: int(0.3 * 1e9) is 299999999
        pids_limit=config.resources.pids,
        files=files,
        ready_argv=agent.ready_argv,
    )


def skill_file(skill: Skill) -> bytes:
    """A skill's SKILL.md: its name and description as YAML front matter (JSON strings are valid
    YAML scalars, so no value can break out of it), then its content."""
    head = f"---\nname: {skill.name}\ndescription: {json.dumps(skill.description, ensure_ascii=False)}\n---\n\n"
    return (head + skill.content).encode("utf-8", "surrogatepass")


def git_identity_env(config: WorkerConfig, agent_id: str) -> dict[str, str]:
    """Author and committer of the agent's commits: `config.git`, else with the git capability
    the agent's name and `<agent_id>@agents.invalid` (CONTRACT §8.3), else nothing."""
    if config.git is not None:
        name, email = config.git.name, config.git.email
    elif Capability.GIT in config.capabilities:
        name, email = config.name, f"{agent_id}@agents.invalid"
    else:
        return {}
    return {"GIT_AUTHOR_NAME": name, "GIT_AUTHOR_EMAIL": email, "GIT_COMMITTER_NAME": name,
            "GIT_COMMITTER_EMAIL": email}


def required_capability_packages(config: WorkerConfig) -> tuple[str, ...]:
    """Sorted, de-duplicated apt packages of the config's capabilities."""
    return _packages(config.capabilities)


def capability_checks(config: WorkerConfig) -> list[tuple[str, ...]]:
    """One argv per capability (in the config's order) that exits 0 if the tool is installed."""
    return [capability_factory(c).check_argv for c in config.capabilities]


def capability_image_tag(base_image: str, capabilities: Iterable[Capability | str]) -> str:
    """Deterministic tag of `base_image` plus the apt packages of `capabilities`.

    Order and duplicates do not matter. The hash covers the base image and the package list,
    so a changed package list gives a new tag. Pass the base image's id (`sha256:...`) rather
    than a moving tag such as `:latest` to get a new tag whenever the base is rebuilt. An empty
    set needs no extra layer: the base image itself is returned.
    """
    caps = sorted({capability_factory(c).capability for c in capabilities})
    if not caps:
        return base_image
    material = json.dumps({"base": base_image, "capabilities": caps, "packages": _packages(caps)},
                          sort_keys=True, separators=(",", ":"))
    return f"{CAPABILITY_IMAGE_REPOSITORY}:{hashlib.sha256(material.encode()).hexdigest()[:12]}"


def _packages(capabilities: Iterable[Capability]) -> tuple[str, ...]:
    return tuple(sorted({p for c in capabilities for p in capability_factory(c).apt_packages}))


#: One sources.list line (`deb [options] URI suite [component...]`), in characters that need no
#: quoting in a Dockerfile or a shell: no quotes, `$`, backslash, `;` or newline.
_APT_SOURCE_RE = re.compile(r"^deb (\[[A-Za-z0-9=,._/ -]+\] )?https?://[A-Za-z0-9._~:/%@+=-]+( [A-Za-z0-9._~/+-]+)+$")
#: Where a capability build with its own apt sources writes them, for that build step only.
_BUILD_SOURCES = "/tmp/spawner-apt-sources.list"


def parse_apt_sources(text: str) -> tuple[str, ...]:
    """`SPAWNER_APT_SOURCES`: sources.list lines separated by `;` or newlines ("" = none).

    Raises ValueError naming the first line that is not `deb [options] URI suite [component...]`.
    """
    lines = tuple(" ".join(part.split()) for part in re.split(r"[;\n]", text) if part.strip())
    for line in lines:
        if not _APT_SOURCE_RE.match(line):
            raise ValueError(f"{line!r} is not a sources.list line 'deb [options] http(s)://URI suite [component...]'")
    return lines


def capability_dockerfile(base_image: str, base_packages: Iterable[str], packages: Iterable[str],
                          apt_sources: Iterable[str] = ()) -> str:
    """The Dockerfile of a capability image: `base_image` plus the Debian `packages` it lacks.

    With `apt_sources` (sources.list lines, see `parse_apt_sources`) apt reads those and nothing
    else, for this build only: the image keeps the base image's own sources.
    """
    missing = sorted(set(packages) - set(base_packages))
    every = " ".join(sorted(set(base_packages) | set(packages)))
    sources = tuple(apt_sources)
    apt, write_sources, drop_sources = "apt-get", "", ""
    if sources:
        apt = f"apt-get -o Dir::Etc::SourceList={_BUILD_SOURCES} -o Dir::Etc::SourceParts=-"
        write_sources = f"printf '%s\\n' {' '.join(shlex.quote(s) for s in sources)} >{_BUILD_SOURCES} && "
        drop_sources = f" {_BUILD_SOURCES}"
    return (
        f"FROM {base_image}\n"
        "USER root\n"
        f"RUN {write_sources}{apt} update && DEBIAN_FRONTEND=noninteractive {apt} install -y --no-install-recommends "
        f"{' '.join(missing)} && rm -rf /var/lib/apt/lists/*{drop_sources}\n"
        f'LABEL {names.LABEL_APT_PACKAGES}="{every}"\n'
    )
