"""MkDocs hook: generate the API reference, one page per mdtblocks module, at build time.

Nothing in ``docs/reference/`` is written by hand. Every module of the package (found
by walking the source tree) gets a page; a module's page renders its public members
with mkdocstrings, and a package's page renders its docstring plus a table of what it
re-exports, each name linking to the page where it is defined. A module added to the
package therefore appears in the site without touching the docs.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = "mdtblocks"
REFERENCE_DIR = "reference"


@dataclass(frozen=True)
class ModulePage:
    """One generated page: the dotted module name, whether it is a package, its page path."""

    module: str
    is_package: bool

    @property
    def path(self) -> str:
        """Page path inside ``docs/``, e.g. ``reference/mdtblocks/blocks/index.md``."""
        parts = self.module.split(".")
        if self.is_package:
            return "/".join([REFERENCE_DIR, *parts, "index.md"])
        return "/".join([REFERENCE_DIR, *parts]) + ".md"


def discover_modules(root: Path = ROOT, package: str = PACKAGE) -> list[ModulePage]:
    """Every module and package under ``root/package``, private ones (``_x.py``) excluded."""
    pages = []
    for path in sorted((root / package).rglob("*.py")):
        rel = path.relative_to(root).with_suffix("")
        parts = list(rel.parts)
        is_package = parts[-1] == "__init__"
        if is_package:
            parts = parts[:-1]
        if not any(p.startswith("_") for p in parts):
            pages.append(ModulePage(".".join(parts), is_package=is_package))
    # Drop modules inside a folder that is not a package (no __init__.py).
    packages = {p.module for p in pages if p.is_package}
    return [p for p in pages if p.module.rpartition(".")[0] in packages or p.module == package]


def _summary(obj: Any) -> str:
    """The first paragraph of ``obj``'s docstring, on one line (for a table cell)."""
    doc = obj.docstring.value.strip() if obj.docstring else ""
    paragraph = doc.split("\n\n", 1)[0]
    return " ".join(paragraph.split()).replace("|", "\\|")


def package_page(module: str, loaded: Any) -> str:
    """Markdown of a package page: its docstring and a linked table of its exports."""
    lines = [f"# `{module}`", "", f"::: {module}", "    options:", "      members: false", "      show_root_heading: false", ""]
    pkg = loaded[module.removeprefix(PACKAGE + ".")] if module != PACKAGE else loaded
    exports = list(pkg.exports or [])
    if exports:
        lines += ["## Exports", "", "| name | kind | summary |", "| --- | --- | --- |"]
        for name in exports:
            obj = pkg[name]
            target = obj.target_path if obj.is_alias else obj.path
            if target.startswith(PACKAGE + "."):
                real = obj.final_target if obj.is_alias else obj
                lines.append(f"| [`{name}`][{target}] | {real.kind.value} | {_summary(real)} |")
            else:
                lines.append(f"| `{name}` | re-export of `{target}` | |")
        lines.append("")
    return "\n".join(lines)


def module_page(module: str) -> str:
    """Markdown of a module page: everything public in it, rendered by mkdocstrings."""
    return f"# `{module}`\n\n::: {module}\n"


def reference_pages(root: Path = ROOT) -> dict[str, str]:
    """``{page path: markdown}`` for the whole reference, plus its ``index.md`` overview."""
    import griffe  # installed with mkdocstrings[python]

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    try:
        from sphinx_roles import SphinxRoles  # the same role rewriting as the rendered docstrings
    finally:
        sys.path.pop(0)
    loaded = griffe.load(
        PACKAGE,
        search_paths=[str(root)],
        resolve_aliases=True,
        resolve_external=False,
        extensions=griffe.load_extensions(SphinxRoles()),
    )
    modules = discover_modules(root)
    pages = {}
    for page in modules:
        pages[page.path] = package_page(page.module, loaded) if page.is_package else module_page(page.module)
    return pages


def reference_nav(root: Path = ROOT) -> list[Any]:
    """Nested nav entries for the reference: a section per package, its index first."""
    modules = discover_modules(root)

    def section(package: str) -> list[Any]:
        entries: list[Any] = []
        for page in modules:
            if page.module == package:
                entries.insert(0, page.path)
            elif page.module.rpartition(".")[0] == package:
                title = page.module.rpartition(".")[2]
                entries.append({title: section(page.module)} if page.is_package else {title: page.path})
        return entries

    return section(PACKAGE)


# --- MkDocs events ----------------------------------------------------------------------

def on_config(config: Any) -> Any:
    """Put the generated pages into the nav entry titled ``API reference``."""
    nav = config["nav"]
    for i, entry in enumerate(nav):
        if isinstance(entry, dict) and "API reference" in entry:
            nav[i] = {"API reference": reference_nav()}
            break
    else:
        nav.append({"API reference": reference_nav()})
    return config


def on_files(files: Any, config: Any) -> Any:
    """Add one virtual page per module (nothing is written into ``docs/``)."""
    from mkdocs.structure.files import File

    for path, content in reference_pages().items():
        files.append(File.generated(config, path, content=content))
    return files
