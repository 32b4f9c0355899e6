#!/usr/bin/python3 -IS
"""The launcher installed as /usr/local/bin/spawner-runner, spawner-runnerd and spawner-model-forward.

Each program is a module in /usr/local/lib/spawner, compiled there at image build (`python3 -m
compileall`), so starting one reads its bytecode from __pycache__ instead of compiling the source
again in every container (the runner alone cost 37 ms of CPU per start; a bare Python 8 ms). The
name this file was run by picks the module: spawner-runner -> spawner_runner. Stdlib only.
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, "/usr/local/lib/spawner")
sys.exit(__import__(os.path.basename(sys.argv[0]).replace("-", "_")).main(sys.argv[1:]))
