"""Pure resolution of the file paths producers pass to send_file / read_file.

Relative paths resolve under /workspace; the result must stay under the allowed roots. This is
the lexical check; the in-container runner repeats it and refuses every symlink on the way, so a
link the agent planted cannot redirect a write or a read.
"""

from __future__ import annotations

import posixpath

from spawner import errors, names

__all__ = ["resolve_path"]


def resolve_path(path: object) -> str:
    """Absolute, normalised path for `path`. Raises InvalidPath if it escapes the allowed roots."""
    if not isinstance(path, str) or not path or "\x00" in path:
        raise errors.InvalidPath(f"path must be a non-empty string without NUL bytes, got {path!r:.80}")
    if len(path) > 4096:
        raise errors.InvalidPath("path is longer than 4096 characters")
    joined = path if path.startswith("/") else posixpath.join(names.WORKSPACE, path)
    resolved = posixpath.normpath(joined)
    if resolved.startswith("//"):
        resolved = "/" + resolved.lstrip("/")
    for kept in names.FLEET_KEPT_PATHS:
        if resolved == kept or resolved.startswith(kept + "/"):
            raise errors.InvalidPath(f"{path!r} is a file the fleet keeps for the agent ({kept}); "
                                     "use a path under /workspace")
    for root in names.ALLOWED_FILE_ROOTS:
        if resolved.startswith(root + "/"):
            return resolved
    roots = ", ".join(names.ALLOWED_FILE_ROOTS)
    raise errors.InvalidPath(f"{path!r} resolves to {resolved!r}, outside the allowed roots ({roots}); "
                             "use a path under /workspace")
