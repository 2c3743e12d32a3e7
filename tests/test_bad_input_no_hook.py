"""The bad-input tests again, in a process without the jaxtyping import hook (as users run the library).

Under the hook, jaxtyping's own errors answer first for wrong dtypes and batch sizes, so the suite's
usual run would pass even if the library's own checks were gone. Here pytest runs
``tests/test_bad_input.py`` with pyproject's ``addopts`` (which install the hook) cleared.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_bad_input_messages_without_the_import_hook():
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    cmd = [sys.executable, "-m", "pytest", "tests/test_bad_input.py", "-q", "-o", "addopts=", "-p", "no:cacheprovider"]
    run = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert "skipped" not in run.stdout and " passed" in run.stdout, run.stdout[-2000:]
