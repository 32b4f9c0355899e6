"""The network guard refuses before anything is sent, in this process and in every Python process
the suite starts, and a refusal fails the test even when the code under test swallows it.

"Nothing was sent" is shown on loopback, where it can be observed (on an address of 127.0.0.0/8
that no other test uses, so nothing foreign arrives): a port we listen on is denied
(NETGUARD_DENY_PORTS, or the hook's deny set in this process); after the refused connect or
sendto, a non-blocking accept/recv finds nothing (loopback delivery completes inside the sending
call, so there is nothing to wait for). The same check without the denial sees the connection,
so the check itself can fail. A non-loopback destination is then refused by the same code path
before any system call, with the guard's own error. The destinations used for real calls are ones
that could not leave this machine even if the guard failed: 0.0.0.0 (the local host on Linux, a
closed port) and name lookups with AI_NUMERICHOST (never sent to a resolver).
"""

from __future__ import annotations

import contextlib
import os
import random
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import spawner_netguard
from spawner_netguard import parse_hosts, refusal

from tests.netguard.plugin import LOG, SITE

REPO = Path(__file__).resolve().parents[2]
HOSTS = parse_hosts("127.0.0.1 localhost\n::1 ip6-localhost  # comment\n10.1.2.3 buildhost\n")
INET, INET6, UNIX = socket.AF_INET, socket.AF_INET6, socket.AF_UNIX


@pytest.mark.parametrize(("event", "args", "refused"), [
    ("socket.connect", (INET, ("127.0.0.1", 6379)), False),
    ("socket.connect", (INET, ("127.9.9.9", 1)), False),
    ("socket.connect", (INET6, ("::1", 80, 0, 0)), False),
    ("socket.connect", (INET6, ("::ffff:127.0.0.1", 80, 0, 0)), False),
    ("socket.connect", (INET, ("localhost", 80)), False),
    ("socket.connect", (UNIX, "/var/run/docker.sock"), False),
    ("socket.sendmsg", (INET, None), False),
    ("socket.connect", (INET, ("192.0.2.1", 6379)), True),
    ("socket.connect", (INET, ("10.0.0.1", 80)), True),
    ("socket.connect", (INET, ("0.0.0.0", 80)), True),
    ("socket.connect", (INET6, ("2001:db8::1", 80, 0, 0)), True),
    ("socket.connect", (INET, ("buildhost", 80)), True),  # in /etc/hosts, but not loopback
    ("socket.connect", (INET, ("example.com", 80)), True),
    ("socket.sendto", (INET, ("8.8.8.8", 53)), True),
    ("socket.getaddrinfo", ("localhost", 80, 0, 0, 0), False),
    ("socket.getaddrinfo", ("192.0.2.1", 80, 0, 0, 0), False),  # a literal: no lookup; its connect is checked
    ("socket.getaddrinfo", (None, 80, 0, 0, 0), False),
    ("socket.getaddrinfo", ("buildhost", 80, 0, 0, 0), False),  # answered from /etc/hosts
    ("socket.getaddrinfo", ("example.com", 80, 0, 0, 0), True),
    ("socket.getaddrinfo", (b"example.com", 80, 0, 0, 0), True),
    ("socket.gethostbyname", ("pypi.org",), True),
    ("socket.gethostbyaddr", ("192.0.2.1",), True),
    ("socket.gethostbyaddr", ("127.0.0.1",), False),
    ("socket.getnameinfo", (("10.0.0.1", 80), 0), True),
    ("open", ("/etc/hosts", "r", 0), False),
])
def test_policy(event, args, refused):
    assert (refusal(event, args, hosts=HOSTS) is not None) is refused


def test_policy_denies_a_listed_loopback_port_only():
    assert refusal("socket.connect", (INET, ("127.0.0.1", 5)), hosts=HOSTS, deny_ports=frozenset({5}))
    assert refusal("socket.connect", (INET, ("127.0.0.1", 6)), hosts=HOSTS, deny_ports=frozenset({5})) is None


@contextlib.contextmanager
def denying(port: int) -> Iterator[None]:
    hook = spawner_netguard.install()  # the hook this process has had since tests/netguard/plugin.py loaded
    hook.deny_ports.add(port)
    try:
        yield
    finally:
        hook.deny_ports.discard(port)


#: Loopback, but an address no other test connects to: nothing foreign can arrive at our listeners.
QUIET = f"127.{random.randint(1, 254)}.{random.randint(1, 254)}.{random.randint(1, 254)}"


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    with socket.socket() as s:
        s.bind((QUIET, 0))
        s.listen(8)
        s.setblocking(False)
        yield s


@pytest.fixture
def receiver() -> Iterator[socket.socket]:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((QUIET, 0))
        s.setblocking(False)
        yield s


def assert_nothing_arrived(listener: socket.socket, receiver: socket.socket) -> None:
    with pytest.raises(BlockingIOError):
        listener.accept()
    with pytest.raises(BlockingIOError):
        receiver.recv(64)


def test_in_this_process_a_refused_connect_or_sendto_sends_nothing(listener, receiver, netguard_refusals):
    port, udp_port = listener.getsockname()[1], receiver.getsockname()[1]
    with denying(port), denying(udp_port):
        with socket.socket() as s, pytest.raises(PermissionError, match="netguard refused"):
            s.connect((QUIET, port))
        with socket.socket() as s, pytest.raises(PermissionError, match="netguard refused"):
            s.connect_ex((QUIET, port))
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s, pytest.raises(PermissionError):
            s.sendto(b"x", (QUIET, udp_port))
    assert_nothing_arrived(listener, receiver)
    assert len(netguard_refusals.take()) == 3

    # the same calls, not denied, are seen by the same checks: the checks above can fail
    with socket.socket() as s:
        s.connect((QUIET, port))
        listener.accept()[0].close()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(b"x", (QUIET, udp_port))
        assert receiver.recv(64) == b"x"

    # off this machine: refused by the guard (errno 13, its message), not by the network
    with socket.socket() as s, pytest.raises(PermissionError, match=r"0\.0\.0\.0:9: not a loopback address"):
        s.connect(("0.0.0.0", 9))
    with pytest.raises(PermissionError, match="asks DNS"):
        socket.getaddrinfo("example.invalid", 80, flags=socket.AI_NUMERICHOST)
    refused = netguard_refusals.take()
    assert [r["refused"].split(":")[0] for r in refused] == ["socket.connect to 0.0.0.0", "socket.getaddrinfo of 'example.invalid'"]
    assert all(r["pid"] == os.getpid() for r in refused)


CHILD = textwrap.dedent("""
    import socket, sys
    address, port, udp_port = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    outcomes = []
    for call in (lambda: socket.create_connection((address, port), timeout=5),
                 lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"x", (address, udp_port)),
                 lambda: socket.create_connection(("0.0.0.0", 9), timeout=5),
                 lambda: socket.getaddrinfo("example.invalid", 80, flags=socket.AI_NUMERICHOST)):
        try:
            call()
            outcomes.append("sent")
        except PermissionError as exc:  # swallowed, as a retry loop would: the log still has it
            outcomes.append("refused" if "netguard refused" in str(exc) else repr(exc))
    print(" ".join(outcomes))
""")


def test_a_python_subprocess_of_the_suite_carries_the_guard_and_sends_nothing(listener, receiver, netguard_refusals):
    port, udp_port = listener.getsockname()[1], receiver.getsockname()[1]
    assert str(SITE) in os.environ["PYTHONPATH"].split(os.pathsep) and os.environ["NETGUARD_LOG"] == str(LOG)
    done = subprocess.run([sys.executable, "-c", CHILD, QUIET, str(port), str(udp_port)], capture_output=True, text=True,
                          timeout=60, env={**os.environ, "NETGUARD_DENY_PORTS": f"{port},{udp_port}"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["refused"] * 4
    assert_nothing_arrived(listener, receiver)
    refused = netguard_refusals.take()
    assert len(refused) == 4 and {r["pid"] for r in refused} != {os.getpid()}
    assert "0.0.0.0:9: not a loopback address" in refused[2]["refused"]


SWALLOWING_TEST = textwrap.dedent("""
    import socket, subprocess, sys

    def test_swallows_in_process():
        try:
            socket.create_connection(("0.0.0.0", 9), timeout=5)
        except OSError:
            pass

    def test_swallows_in_a_subprocess():
        code = "import socket\\ntry:\\n socket.create_connection(('0.0.0.0', 9), timeout=5)\\nexcept OSError:\\n pass"
        assert subprocess.run([sys.executable, "-c", code]).returncode == 0

    def test_stays_on_loopback():
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", 9)) != 0
""")


def test_a_refusal_the_code_swallows_still_fails_its_test(tmp_path):
    (tmp_path / "test_swallowing.py").write_text(SWALLOWING_TEST)
    done = subprocess.run([sys.executable, "-m", "pytest", "-p", "tests.netguard.plugin", "-p", "no:xdist",
                           "-p", "no:cacheprovider", "-q", "--rootdir", str(tmp_path), "-c", os.devnull,
                           str(tmp_path / "test_swallowing.py")],
                          cwd=REPO, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "NETGUARD_DIR": str(tmp_path)})  # its failing log stays there
    assert done.returncode == 1, done.stdout + done.stderr
    summary = done.stdout.strip().splitlines()[-1]
    assert "2 errors" in summary, done.stdout  # the two swallowing tests error at teardown
    assert "ERROR" in done.stdout and "test_stays_on_loopback" not in done.stdout.split("short test summary")[1]
    assert done.stdout.count("socket.connect to 0.0.0.0:9: not a loopback address") >= 2, done.stdout


def _environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace")
    return dict(item.split("=", 1) for item in raw.split("\0") if "=" in item)


@pytest.mark.docker
@pytest.mark.redis
def test_the_session_fleets_workers_run_under_the_guard(fleet):
    assert set(fleet.procs) >= {"worker-control", "worker-turns"}
    for name, proc in fleet.procs.items():
        assert proc.poll() is None, f"{name} exited with {proc.returncode}; see test-output/{name}*.log"
        env = _environ(proc.pid)
        assert env.get("NETGUARD_LOG") == str(LOG), name
        assert str(SITE) in env.get("PYTHONPATH", "").split(os.pathsep), name
