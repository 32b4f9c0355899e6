"""The test suite's network guard: no test or benchmark sends a packet off this machine.

An audit hook (PEP 578) sees every socket connect, sendto and sendmsg and every name lookup of
this interpreter before the system call is made, and refuses with PermissionError those that
would reach beyond 127.0.0.0/8 or ::1: a connect to another address, a lookup of a name that is
not in /etc/hosts (it would ask the DNS server). Each refusal is also appended, one JSON line,
to the file named by NETGUARD_LOG, which the suite's conftest reads after every test: a refusal
the code under test swallowed (a retry loop, a `except OSError`) still fails the test.

Installed in the pytest process by tests/conftest.py, and in every Python process the suite
starts (celery workers, `spawner up` and its children, the benchmark) by sitecustomize.py in
this folder, which the conftest puts on PYTHONPATH. Standard library only; nothing is imported
until a socket event arrives, so interpreters start as fast as without it.

NETGUARD_DENY_PORTS (comma-separated) refuses loopback ports too: the guard's own tests use it
to show, on a port they listen on, that a refused connect sends nothing.
"""

from __future__ import annotations

import os
import sys
from _thread import get_ident
from functools import lru_cache
from typing import Any

_EVENTS = frozenset({"socket.connect", "socket.sendto", "socket.sendmsg", "socket.getaddrinfo",
                     "socket.gethostbyname", "socket.gethostbyaddr", "socket.getnameinfo"})
_hosts_cache: dict[str, list[str]] | None = None


def parse_hosts(text: str) -> dict[str, list[str]]:
    """Names of an /etc/hosts text -> their addresses."""
    names: dict[str, list[str]] = {}
    for line in text.splitlines():
        fields = line.split("#", 1)[0].split()
        for name in fields[1:]:
            names.setdefault(name.lower(), []).append(fields[0])
    return names


def _hosts() -> dict[str, list[str]]:
    global _hosts_cache
    if _hosts_cache is None:
        try:
            with open("/etc/hosts") as fh:
                _hosts_cache = parse_hosts(fh.read())
        except OSError:
            _hosts_cache = {}
    return _hosts_cache


@lru_cache(maxsize=256)
def is_loopback_ip(text: str) -> bool | None:
    """True/False for an IP address literal, None for anything else (a name)."""
    import ipaddress
    try:
        ip = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None
    mapped = getattr(ip, "ipv4_mapped", None)
    return bool((mapped or ip).is_loopback)


def refusal(event: str, args: tuple[Any, ...], *, hosts: dict[str, list[str]],
            deny_ports: frozenset[int] = frozenset()) -> str | None:
    """Why this audit event must not happen, or None. `args` as CPython passes them, except that
    for connect/sendto/sendmsg the socket is given as its family (an int)."""
    import socket
    if event in ("socket.connect", "socket.sendto", "socket.sendmsg"):
        family, address = args
        if family not in (socket.AF_INET, socket.AF_INET6) or not isinstance(address, tuple) or not address:
            return None  # Unix sockets, netlink, a sendmsg on a connected socket (address None)
        host, port = str(address[0]), (address[1] if len(address) > 1 else None)
        loopback = is_loopback_ip(host)
        if loopback is None:  # a name: the kernel never sees it, the C library resolves it
            addresses = hosts.get(host.lower())
            loopback = bool(addresses) and all(is_loopback_ip(a) for a in addresses)
        if not loopback:
            return f"{event} to {host}:{port}: not a loopback address"
        if port in deny_ports:
            return f"{event} to {host}:{port}: port denied by NETGUARD_DENY_PORTS"
        return None
    if event in ("socket.getaddrinfo", "socket.gethostbyname", "socket.gethostbyaddr", "socket.getnameinfo"):
        host = args[0]
        if event == "socket.getnameinfo":
            host = host[0] if isinstance(host, tuple) and host else None
        if isinstance(host, bytes):
            host = host.decode("ascii", "replace")
        if host is None or host == "":
            return None
        host = str(host)
        loopback = is_loopback_ip(host)
        if loopback is None:
            return None if host.lower() in hosts else f"{event} of {host!r}: a name not in /etc/hosts asks DNS"
        if not loopback and event in ("socket.gethostbyaddr", "socket.getnameinfo"):
            return f"{event} of {host}: a reverse lookup asks DNS"
        return None  # a literal address: resolving it sends nothing; its connect is checked
    return None


def _record(reason: str) -> None:
    import json
    import traceback
    path = os.environ.get("NETGUARD_LOG")
    if not path:
        return
    frames = traceback.extract_stack()[:-2]  # not _record and the hook
    line = json.dumps({"pid": os.getpid(), "argv": sys.argv[:4], "refused": reason,
                       "where": [f"{f.filename}:{f.lineno} {f.name}" for f in frames[-6:]]})
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


class _Hook:
    def __init__(self, deny_ports: frozenset[int]) -> None:
        self.deny_ports = set(deny_ports)
        self.busy: set[int] = set()  # threads inside the hook: its own imports and writes raise events

    def __call__(self, event: str, args: tuple[Any, ...]) -> None:
        if event not in _EVENTS or get_ident() in self.busy:
            return
        self.busy.add(get_ident())
        try:
            if event in ("socket.connect", "socket.sendto", "socket.sendmsg"):
                args = (args[0].family, args[1])
            reason = refusal(event, args, hosts=_hosts(), deny_ports=frozenset(self.deny_ports))
            if reason is not None:
                _record(reason)
        finally:
            self.busy.discard(get_ident())
        if reason is not None:
            raise PermissionError(13, f"netguard refused {reason}")


HOOK: _Hook | None = None


def install() -> _Hook:
    """Add the audit hook to this interpreter, once (hooks cannot be removed)."""
    global HOOK
    if HOOK is None:
        deny = frozenset(int(p) for p in os.environ.get("NETGUARD_DENY_PORTS", "").split(",") if p.strip())
        HOOK = _Hook(deny)
        sys.addaudithook(HOOK)
    return HOOK
