"""Every bound the workers put on what comes from inside an agent's container, in one place.

Whatever runs in a container is untrusted (docs/design.md, "Threat model"): its runner, its turn
records, its socket, its logs and its files. Each worker-side read of such data is bounded by one
of these (bytes, lines, frames or time), and every call into a container has a deadline that
nothing inside can stretch. Stdlib only; no other module spells these numbers.
"""

from __future__ import annotations

__all__ = [
    "ARCHIVE_READ_MAX_BYTES",
    "COMMAND_MAX_BYTES",
    "CONTAINER_LOG_MAX_FILES",
    "CONTAINER_LOG_MAX_SIZE",
    "EVENTS_MAX_BYTES_DEFAULT",
    "EVENT_STREAM_MAXLEN",
    "FILE_CALL_SECONDS",
    "FILE_MAX_BYTES",
    "INIT_CALL_EXTRA_SECONDS",
    "LOGS_MAX_BYTES",
    "LOGS_TAIL_MAX_LINES",
    "OUTPUT_MAX_BYTES",
    "RUNNER_FRAME_MAX_BYTES",
    "RUNNER_STATUS_MAX_BYTES",
    "RUN_DIR_MAX_BYTES",
    "RUN_DIR_MAX_FILES",
    "TURN_DEADLINE_GRACE_SECONDS",
    "TURN_LINE_MAX_BYTES",
]

# --- time: deadlines of calls into a container ----------------------------------------------
#: A turn's follower gives up this long after the turn's own timeout, whatever the runner inside
#: says or does not say; the result then reaches the producer well within timeout + 30 s.
TURN_DEADLINE_GRACE_SECONDS = 20.0
#: A file operation (send_file, read_file) into a container answers within this, or fails with
#: `Unavailable` naming the agent (a silent or replaced runner socket, a frozen runner).
FILE_CALL_SECONDS = 30.0
#: `init` (create) may take the readiness check's own timeout plus this.
INIT_CALL_EXTRA_SECONDS = 30.0

# --- bytes: what one read of agent-controlled data may hold ---------------------------------
#: One frame of the runner's stream framing (the header may declare up to 4 GiB: refused above
#: this), beyond what the call itself may carry in one write: a file's bytes for read_file
#: (FILE_MAX_BYTES), a record line for a turn (TURN_LINE_MAX_BYTES).
RUNNER_FRAME_MAX_BYTES = 256 * 1024
#: A non-streaming runner call's status stream (stderr) is kept up to this many bytes.
RUNNER_STATUS_MAX_BYTES = 64 * 1024
#: One JSON line of a turn's record stream: a 64 KiB output chunk is at most ~6x that in JSON, a
#: relayed `orchestrator respond` line at most 2 MiB (the runner's RESPONSE_LINE_MAX_BYTES).
TURN_LINE_MAX_BYTES = 3 * 1024 * 1024
#: `logs`: at most this many container log lines and bytes, whatever `tail` asks for.
LOGS_TAIL_MAX_LINES = 10_000
LOGS_MAX_BYTES = 1024 * 1024
#: A file read through Docker's archive API (a tar stream) is never read past this.
ARCHIVE_READ_MAX_BYTES = 1024 * 1024

#: SPAWNER_EVENTS_MAX_BYTES's default (CONTRACT §8.1): the byte cap of one agent's event stream.
EVENTS_MAX_BYTES_DEFAULT = 64 * 1024 * 1024
#: Approximate entry cap of each agent's event stream (XADD MAXLEN ~), beside the byte cap.
EVENT_STREAM_MAXLEN = 10_000

# --- bytes: what a producer may send and get back -------------------------------------------
#: One file of send_file / read_file.
FILE_MAX_BYTES = 10 * 1024 * 1024
#: One send_command `command`.
COMMAND_MAX_BYTES = 1024 * 1024
#: The `output` of one send_command result is capped here; events still carry every chunk.
OUTPUT_MAX_BYTES = 1024 * 1024

#: Each container's runner-socket folder on the host (SPAWNER_RUN_DIR/<name>) is a tmpfs this
#: small, with this many inodes: the agent can write there, never fill the host's /run.
RUN_DIR_MAX_BYTES = 64 * 1024
RUN_DIR_MAX_FILES = 16

# --- disk ----------------------------------------------------------------------------------------
#: Docker's json-file log rotation for every agent container: files of this size, this many kept.
CONTAINER_LOG_MAX_SIZE = "10m"
CONTAINER_LOG_MAX_FILES = 3
