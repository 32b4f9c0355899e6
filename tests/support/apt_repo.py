"""scripts/setup.sh's local apt repository, served on 127.0.0.1 to the session's capability builds.

Tests reach nothing beyond 127.0.0.0/8 (tests/netguard/), so every fleet the suite starts builds
its capability images from this folder (SPAWNER_APT_SOURCES, see tests/conftest.py's Fleet)
instead of the Debian archive. The engine builds on the host's network (`network_mode="host"` in
spawner/backend/docker.py), so 127.0.0.1 in the build is this machine's loopback.
"""

from __future__ import annotations

import os
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

#: Where scripts/setup.sh puts the repository (its $STATE/apt-repo).
FOLDER = Path(os.environ.get("SPAWNER_STATE_DIR") or "/var/tmp/workers-spawner") / "apt-repo"


class AptRepo:
    """A flat apt repository (`Packages` plus .deb files) over HTTP on 127.0.0.1, in a thread."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        #: (path, HTTP status) of every request served, in order.
        self.requests: list[tuple[str, int]] = []
        repo = self

        class Handler(SimpleHTTPRequestHandler):
            def log_request(self, code: Any = "-", size: Any = "-") -> None:
                repo.requests.append((self.path, int(code)))

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), partial(Handler, directory=str(folder)))
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, name="apt-repo", daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/"

    @property
    def sources(self) -> str:
        """The SPAWNER_APT_SOURCES value naming this repository (unsigned: made by setup.sh here)."""
        return f"deb [trusted=yes] {self.url} ./"

    def problem(self) -> str | None:
        """Why capability builds cannot install from the folder, or None."""
        if not (self.folder / "Packages").is_file():
            return f"the local apt repository {self.folder} is missing; run scripts/setup.sh"
        return None


_lock = threading.Lock()
_served: AptRepo | None = None


def served() -> AptRepo:
    """This process's server, started on first use (the first fleet of the session)."""
    global _served
    with _lock:
        if _served is None:
            _served = AptRepo(FOLDER)
        return _served
