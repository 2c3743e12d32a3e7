"""The shell commands of the README and the docs run, not only their flag names exist.

Every recipe call in a ``bash`` block is taken from the page itself, so a renamed script,
flag or default run folder in the docs fails here. Each command is run as written, in page
order and in one fresh working directory per page, with the tiny-run flags of
:data:`OVERRIDES` appended (argparse keeps the last value, so they win) and a checkpoint
folder replaced by the newest checkpoint of the same run folder (the docs name step 1800 or
400000; the tiny run stops at step 2).

Commands that need ImageNet, a VAE download, GPUs or many processes, or minutes of compute
are not run; each is skipped by one of the named rules in :data:`SKIP_RULES`, and every skip
shows up as a skipped test with its rule (``pytest -rs``), so none is dropped silently.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from test_docs import PAGES, ROOT, code_blocks
from training_utils import TINY

from mdtblocks.training import latest_checkpoint

# (rule, pattern on the command line): the first that matches skips the command.
SKIP_RULES: list[tuple[str, re.Pattern[str]]] = [
    ("torchrun: several processes / GPUs", re.compile(r"^\s*torchrun\b")),
    ("needs ImageNet or its extracted latents", re.compile(r"/data/|--data\b|--latents\b")),
    ("needs a VAE from the Hub or a models folder", re.compile(r"--vae\s+(stabilityai/|/models/)")),
    ("a placeholder (`...`, `<name>`) stands for arguments", re.compile(r"\.\.\.|<\w+>")),
    ("evaluate.py: Inception weights and reference statistics of a real data set", re.compile(r"recipes/evaluate\.py")),
    ("study_learning_speed.py: minutes of training even with --quick", re.compile(r"recipes/study_learning_speed\.py")),
]

TRAIN_TINY = TINY + ["--steps", "2", "--ckpt-every", "2", "--log-every", "1", "--num-samples", "0"]
# Flags appended per script so that a docs command runs in seconds.
OVERRIDES: dict[str, list[str]] = {
    "mdtv2_imagenet256.py": TRAIN_TINY,
    "sample.py": ["--num-samples", "2", "--batch-size", "2", "--steps", "2", "--device", "cpu", "--no-progress"],
}


def shell_commands(page: Path) -> list[tuple[int, str]]:
    """``(line, command)`` for each recipe call in the page's shell blocks (continuations joined, ``&&`` split)."""
    found = []
    for line, code, _ in code_blocks(page, ("bash", "sh", "shell", "console")):
        for logical in code.replace("\\\n", " ").splitlines():
            for part in logical.split("&&"):
                if "recipes/" in part:
                    found.append((line, " ".join(part.split("#", 1)[0].split())))
    return found


def skip_rule(command: str) -> str | None:
    return next((rule for rule, pattern in SKIP_RULES if pattern.search(command)), None)


DOC_PAGES = [*PAGES, ROOT / "README.md"]
COMMANDS = [(page, line, cmd) for page in DOC_PAGES for line, cmd in shell_commands(page)]
RUN_PAGES = sorted({page for page, _, cmd in COMMANDS if skip_rule(cmd) is None})
SKIPPED = [(page, line, cmd) for page, line, cmd in COMMANDS if skip_rule(cmd) is not None]


def name(page: Path) -> str:
    return str(page.relative_to(ROOT))


def script_of(command: str) -> str:
    return re.search(r"recipes/\w+\.py", command).group(0)


def test_the_quick_start_and_sampling_commands_are_run() -> None:
    """The rules must not skip everything: the README's quick start and the tutorial's sampling command run."""
    run = {(p.name, script_of(cmd)) for p, _, cmd in COMMANDS if skip_rule(cmd) is None}
    assert ("README.md", "recipes/mdtv2_imagenet256.py") in run, run
    assert ("getting-started.md", "recipes/sample.py") in run, run


def prepare(command: str, cwd: Path) -> list[str]:
    """The argv that runs ``command`` here: this interpreter, the script's tiny overrides, a real checkpoint."""
    argv = shlex.split(command)
    assert argv[0] in ("python", "python3"), f"{command!r}: expected `python recipes/...`"
    script = argv[1]
    assert script.startswith("recipes/") and (ROOT / script).is_file(), f"the docs run {script}, which does not exist"
    args = argv[2:]
    if "--ckpt" in args:
        i = args.index("--ckpt") + 1
        run_dir = cwd / Path(args[i]).parent.parent
        newest = latest_checkpoint(run_dir) if run_dir.is_dir() else None
        assert newest is not None, f"{command!r}: no run folder {run_dir.relative_to(cwd)} from an earlier command"
        args[i] = str(newest)
    base = Path(script).name
    assert base in OVERRIDES, f"no tiny-run overrides for {script}: add them to OVERRIDES or a skip rule"
    return [sys.executable, str(ROOT / script), *args, *OVERRIDES[base]]


@pytest.mark.parametrize("page", RUN_PAGES, ids=name)
def test_shell_commands_run(page: Path, tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for line, command in [(line, cmd) for p, line, cmd in COMMANDS if p == page and skip_rule(cmd) is None]:
        argv = prepare(command, tmp_path)
        result = subprocess.run(argv, check=False, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, f"{name(page)}:{line}: {command!r} failed:\n{result.stderr[-3000:]}"


@pytest.mark.parametrize(
    ("page", "line", "command"), SKIPPED, ids=[f"{name(p)}:{line}:{script_of(c)}" for p, line, c in SKIPPED]
)
def test_shell_commands_not_run(page: Path, line: int, command: str) -> None:
    """One skipped test per command a rule excludes, with the rule as its reason."""
    pytest.skip(f"{skip_rule(command)}: {command}")
