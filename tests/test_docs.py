"""The documentation cannot rot: its Python snippets run, its recipe flags exist, every public name is documented.

Snippet conventions (see docs/index.md, "About the code on this site"):

- every fenced ``python`` block of a page runs, in page order, in one namespace per
  page, inside a fresh temporary working directory;
- a block right after a line ``<!-- skip: reason -->`` is shown but not run (downloads,
  GPUs, hours of compute);
- a page may declare ``<!-- docs-test-setup: recipes/x.py --flag ... -->``: that recipe
  runs first, in the same directory (e.g. a 2-step training run, so that the page's
  snippets read a real run folder);
- every ``--flag`` given to a ``recipes/*.py`` script in a ``bash`` block must appear in
  that script's ``--help``; the short commands are also run (``test_docs_commands.py``).

Code in docstrings counts too: a docstring paragraph ending in ``::`` followed by an
indented block that imports something is run the same way (one namespace per docstring).

Official checkpoints are gigabytes, so the examples that load them run here against
stand-ins with the same file names, the same key layout and the same input shape
(32x32x4 latents, 1000 classes + the null class): tiny random MDTv2, MDT and DiT models
written in the official layouts (and checked to load back through ``load_official``).
"""

from __future__ import annotations

import ast
import functools
import importlib
import json
import os
import pkgutil
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import mdtblocks
from mdtblocks import DiT, MaskedDiffusionTransformer, load_official

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = sorted(p for p in DOCS.rglob("*.md") if "hooks" not in p.parts)

FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>```+|~~~+)[ \t]*(?P<lang>[\w+-]*)[^\n]*\n(?P<body>.*?)^(?P=indent)(?P=fence)[ \t]*$", re.M | re.S)
SKIP = re.compile(r"<!--\s*skip:.*?-->\s*$")
SETUP = re.compile(r"<!--\s*docs-test-setup:\s*(?P<script>recipes/\w+\.py)(?P<args>[^>]*?)\s*-->")

# Official release names used in the docs and docstrings.
MDTV2_FILE, MDT_FILE, DIT_FILE = "mdt_xl2_v2_ckpt.pt", "mdt_xl2_v1_ckpt.pt", "DiT-XL-2-256x256.pt"


def code_blocks(page: Path, languages: tuple[str, ...]) -> list[tuple[int, str, bool]]:
    """``(line, code, skipped)`` of each fenced block in ``languages``, in page order."""
    text = page.read_text()
    blocks = []
    for m in FENCE.finditer(text):
        if m.group("lang") not in languages:
            continue
        before = text[: m.start()].rstrip("\n").rsplit("\n", 1)[-1]
        line = text.count("\n", 0, m.start()) + 1
        body = "\n".join(row[len(m.group("indent")) :] for row in m.group("body").splitlines())
        blocks.append((line, body, bool(SKIP.search(before))))
    return blocks


def official_layout(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """``model``'s weights under the official key names (the inverse of ``load_official``'s renaming)."""
    if isinstance(model, DiT):
        return dict(model.state_dict())  # DiT's keys are the official ones
    cfg = model.config
    enc, half = cfg.encoder_depth, cfg.encoder_depth // 2

    def rename(key: str) -> str:
        if cfg.long_skip:  # MDTv2: two encoder halves and a separate decoder stack
            key = re.sub(r"^encoder\.(\d+)\.", lambda m: f"en_inblocks.{m[1]}." if int(m[1]) < half
                         else f"en_outblocks.{int(m[1]) - half}.", key)
            key = re.sub(r"^decoder\.", "de_blocks.", key)
        else:  # MDT v1: one stack of blocks
            key = re.sub(r"^encoder\.", "blocks.", key)
            key = re.sub(r"^decoder\.(\d+)\.", lambda m: f"blocks.{enc + int(m[1])}.", key)
        key = key.replace("side_interpolater.blocks.", "sideblocks.")
        return "mask_token" if key == "side_interpolater.mask_token" else key

    return {rename(k): v for k, v in model.state_dict().items()}


def write_stand_ins(directory: Path) -> None:
    """Tiny official-layout checkpoints under the release names (see module docstring)."""
    torch.manual_seed(0)
    small = {"input_size": 32, "num_classes": 1000, "hidden_size": 64, "num_heads": 4}
    models = {
        MDTV2_FILE: MaskedDiffusionTransformer.from_preset("MDTv2-S/4", depth=6, decode_layer=2, **small),
        MDT_FILE: MaskedDiffusionTransformer.from_preset("MDT-S/4", depth=4, **small),
        DIT_FILE: DiT.from_preset("DiT-S/4", input_size=32, num_classes=1000, depth=2),  # a preset width: heads inferred
    }
    for name, model in models.items():
        with torch.no_grad():  # leave adaLN-Zero's exact zeros, so that outputs depend on the input
            for p in model.parameters():
                p.add_(torch.randn_like(p), alpha=0.02)
        torch.save(official_layout(model), directory / name)


def test_stand_ins_load_as_official_checkpoints(tmp_path: Path) -> None:
    """The stand-ins are read by ``load_official`` exactly as the released files would be."""
    write_stand_ins(tmp_path)
    mdtv2, mdt, dit = (load_official(tmp_path / f) for f in (MDTV2_FILE, MDT_FILE, DIT_FILE))
    assert (mdtv2.config.long_skip, mdt.config.long_skip, type(dit)) == (True, False, DiT)
    for model in (mdtv2, mdt, dit):
        assert (model.config.input_size, model.config.in_channels, model.config.num_classes) == (32, 4, 1000)


PYTHON_PAGES = [p for p in PAGES if code_blocks(p, ("python", "py"))]

# Runs in a fresh interpreter, as a reader would: without the test suite's runtime
# type-checking import hook (which slows a 250-step sampling loop down tenfold).
RUNNER = """
import json, sys, traceback
namespace = {"__name__": "__docs__"}
for where, code in json.load(open(sys.argv[1])):
    try:
        exec(compile(code, where, "exec"), namespace)
    except BaseException:
        print(f"DOCS SNIPPET FAILED at {where}", file=sys.stderr)
        traceback.print_exc()
        sys.exit(1)
"""


def run_snippets(blocks: list[tuple[str, str]], directory: Path, setups: list[list[str]] = ()) -> None:
    """Run ``(where, code)`` blocks in one fresh interpreter in ``directory``, after the setup recipes."""
    write_stand_ins(directory)
    # One thread: the snippets use tiny models, and on a busy machine extra OpenMP
    # threads spin against each other (a 250-step loop goes from 3 s to a minute).
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    for argv in setups:
        setup = subprocess.run(
            [sys.executable, str(ROOT / argv[0]), *argv[1:]], cwd=directory, env=env, capture_output=True, text=True,
            timeout=600,
        )
        assert setup.returncode == 0, f"setup {argv} failed:\n{setup.stderr[-4000:]}"
    (directory / "blocks.json").write_text(json.dumps(blocks))
    run = subprocess.run(
        [sys.executable, "-c", RUNNER, "blocks.json"], cwd=directory, env=env, capture_output=True, text=True,
        timeout=900,
    )
    assert run.returncode == 0, f"{run.stderr[-6000:]}\n--- stdout ---\n{run.stdout[-2000:]}"


@pytest.mark.parametrize("page", PYTHON_PAGES, ids=[str(p.relative_to(DOCS)) for p in PYTHON_PAGES])
def test_python_snippets_run(page: Path, tmp_path: Path) -> None:
    """Each page's python blocks run top to bottom, in a fresh working directory, without error."""
    setups = [[m.group("script"), *m.group("args").split()] for m in SETUP.finditer(page.read_text())]
    blocks = [
        (f"{page.relative_to(ROOT)}:{line}", code) for line, code, skipped in code_blocks(page, ("python", "py")) if not skipped
    ]
    run_snippets(blocks, tmp_path, setups)


LITERAL = re.compile(r"::\n\n((?:(?:[ \t]+[^\n]*)?\n)+)")


def docstring_examples() -> dict[str, list[tuple[str, str]]]:
    """``{owner: [(where, code), ...]}`` for the python literal blocks in the package's docstrings."""
    found: dict[str, list[tuple[str, str]]] = {}
    for path in sorted((ROOT / "mdtblocks").rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if not isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            doc = ast.get_docstring(node, clean=True)
            if not doc:
                continue
            owner = f"{path.relative_to(ROOT)}:{getattr(node, 'name', '<module>')}"
            for m in LITERAL.finditer(doc + "\n"):
                code = textwrap.dedent(m.group(1))
                if re.search(r"^(from|import) ", code, re.M):
                    found.setdefault(owner, []).append((owner, code))
    return found


DOCSTRING_EXAMPLES = docstring_examples()


@pytest.mark.parametrize("owner", sorted(DOCSTRING_EXAMPLES))
def test_docstring_examples_run(owner: str, tmp_path: Path) -> None:
    """Code examples in docstrings (rendered in the API reference) run too."""
    run_snippets(DOCSTRING_EXAMPLES[owner], tmp_path)


def test_skip_markers_are_used_sparingly() -> None:
    """Most python snippets must run; a skip marker needs a reason."""
    total = skipped = 0
    for page in PAGES:
        for _, _, skip in code_blocks(page, ("python", "py")):
            total += 1
            skipped += skip
        for m in re.finditer(r"<!--\s*skip(?P<rest>[^>]*)-->", page.read_text()):
            assert m.group("rest").strip(" :"), f"{page.name}: a skip marker without a reason"
    assert total and skipped <= total // 2, f"{skipped} of {total} python snippets are skipped"


# --- recipe flags ---------------------------------------------------------------------

RECIPE_CALL = re.compile(r"recipes/(?P<script>[\w]+\.py)(?P<args>(?:[^\n\\]|\\\n)*)")


def recipe_flags_in_docs() -> dict[str, set[str]]:
    """``{script: {--flag, ...}}`` for every recipe call in a bash block of the docs."""
    found: dict[str, set[str]] = {}
    for page in PAGES:
        for _, code, _ in code_blocks(page, ("bash", "sh", "shell", "console")):
            for m in RECIPE_CALL.finditer(code):
                flags = set(re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", m.group("args")))
                found.setdefault(m.group("script"), set()).update(flags)
    return found


DOC_RECIPES = recipe_flags_in_docs()
FLAG = re.compile(r"(?<![\w-])(--[a-z][a-z0-9-]*)")
# Flags of other tools that the docs mention (torchrun's rendezvous, mkdocs).
FOREIGN_FLAGS = {"--nnodes", "--nproc-per-node", "--rdzv-backend", "--rdzv-endpoint", "--standalone", "--strict"}


@functools.cache
def recipe_flags(script: str, folder: str = "recipes") -> frozenset[str]:
    """The flags ``<folder>/<script> --help`` lists."""
    path = ROOT / folder / script
    assert path.is_file(), f"the docs call {folder}/{script}, which does not exist"
    run = subprocess.run([sys.executable, str(path), "--help"], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert run.returncode == 0, run.stderr[-2000:]
    return frozenset(FLAG.findall(run.stdout))


@pytest.mark.parametrize("script", sorted(DOC_RECIPES))
def test_recipe_flags_in_docs_exist(script: str) -> None:
    """A flag passed to a recipe in a shell example is one that recipe accepts."""
    unknown = sorted(DOC_RECIPES[script] - recipe_flags(script))
    assert not unknown, f"the docs pass {unknown} to recipes/{script}, whose --help lists {sorted(recipe_flags(script))}"


def test_flags_named_in_prose_exist() -> None:
    """A ``--flag`` named anywhere in the docs (prose included) is one of a recipe, a benchmark or torchrun."""
    scripts = [(p.name, p.parent.name) for folder in ("recipes", "benchmarks") for p in sorted((ROOT / folder).glob("*.py"))]
    known = set().union(*(recipe_flags(name, folder) for name, folder in scripts)) | FOREIGN_FLAGS
    named = {(page.name, f) for page in PAGES for f in FLAG.findall(page.read_text())}
    unknown = sorted((page, f) for page, f in named if f not in known)
    assert not unknown, f"flags named in the docs that no recipe accepts: {unknown}"


# --- public surface -------------------------------------------------------------------

def public_modules() -> list[str]:
    """Every importable module of the package, as the interpreter sees it."""
    names = [mdtblocks.__name__]
    for info in pkgutil.walk_packages(mdtblocks.__path__, prefix="mdtblocks."):
        if not any(part.startswith("_") for part in info.name.split(".")):
            names.append(info.name)
    return sorted(names)


def _hook():
    sys.path.insert(0, str(DOCS / "hooks"))
    try:
        return importlib.import_module("api_reference")
    finally:
        sys.path.pop(0)


def test_api_reference_covers_every_module() -> None:
    """The reference generator finds exactly the modules Python can import."""
    hook = _hook()
    pages = {p.module for p in hook.discover_modules()}
    assert pages == set(public_modules())


def _griffe_package():
    griffe = pytest.importorskip("griffe")
    return griffe.load("mdtblocks", search_paths=[str(ROOT)], resolve_aliases=True, resolve_external=False)


def _docstring(obj) -> str:
    return obj.docstring.value.strip() if obj.docstring else ""


def undocumented_names() -> list[str]:
    """Public names (``__all__`` of every module, and public methods of public classes) without a docstring."""
    package = _griffe_package()
    missing = []
    seen = set()
    for module_name in public_modules():
        module = importlib.import_module(module_name)
        if not _docstring(package if module_name == "mdtblocks" else package[module_name.removeprefix("mdtblocks.")]):
            missing.append(module_name)
        for name in getattr(module, "__all__", []):
            static = package[f"{module_name}.{name}".removeprefix("mdtblocks.")]
            if static.is_alias and not static.target_path.startswith("mdtblocks."):
                continue  # a re-export from another library (e.g. ``torch.Tensor``): documented there
            obj = static.final_target if static.is_alias else static
            if obj.path in seen:
                continue
            seen.add(obj.path)
            if not _docstring(obj):
                missing.append(obj.path)
            if obj.is_class:
                for member in obj.members.values():
                    if member.is_alias or member.name.startswith("_") or not (member.is_function or "property" in member.labels):
                        continue
                    if not _docstring(member):
                        missing.append(member.path)
    return missing


def test_every_public_name_has_a_docstring() -> None:
    """Every public module, every name in an ``__all__``, every public method has a docstring."""
    missing = undocumented_names()
    assert not missing, "public names without a docstring:\n  " + "\n  ".join(missing)
