"""The README's producer example, run as written from a separate Python process."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.docker, pytest.mark.redis]


def test_readme_producer_example_works_as_written(fleet, producer):
    readme = (REPO / "README.md").read_text()
    block = next(b for b in re.findall(r"```python\n(.*?)```", readme, re.S) if "send_task" in b)
    code = block.replace("redis://127.0.0.1:6379/0", fleet.redis_url)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "0 hello\nLinux\n\nhello\n\nidle\n"
