"""Griffe extension: read the reStructuredText habits of docstrings as Markdown.

Two habits are translated: Sphinx roles become checked cross-references, and ``::``
literal blocks become fenced code blocks (highlighted as Python when they import
something).

mdtblocks docstrings may cite other objects the Sphinx way, for example
``:func:`~mdtblocks.load_official``` or ``:meth:`save_pretrained```. mkdocstrings
does not read roles, so this extension rewrites each one, when the package is loaded,
into an autorefs link ``[text][canonical.path]``: relative names are resolved in the
docstring owner's scope and re-exports are followed to where the object is defined.
A role that names nothing becomes a link to a missing target, which ``mkdocs build
--strict`` reports, so references cannot silently go stale.
"""

from __future__ import annotations

import re
import textwrap
from typing import Any

import griffe

ROLE = re.compile(r":(?:py:)?(?:func|class|meth|attr|data|mod|obj|exc|const):`(~?)([\w.]+)`")


def _lookup(root: Any, path: str) -> Any | None:
    """The object at dotted ``path`` under package ``root``, or None."""
    first, _, rest = path.partition(".")
    if first != root.name:
        return None
    obj = root
    for part in rest.split(".") if rest else []:
        obj = _members(obj).get(part)
        if obj is None:
            return None
    return obj


def _members(obj: Any) -> dict[str, Any]:
    """Members of ``obj``, inherited ones included for classes."""
    try:
        return dict(obj.all_members) if obj.is_class else dict(obj.members)
    except (AttributeError, griffe.AliasResolutionError):
        return dict(getattr(obj, "members", {}))


def _canonical(obj: Any) -> str:
    """Where ``obj`` is rendered: its definition, or its owner for an undocumented attribute.

    Attributes without a docstring of their own (instance attributes described in the
    class's ``Attributes:`` section) get no anchor; a reference to one points at the class.
    """
    try:
        target = obj.final_target if obj.is_alias else obj
    except griffe.AliasResolutionError:
        return obj.target_path
    if target.is_attribute and not target.docstring and target.parent is not None and target.parent.is_class:
        return target.parent.path
    return target.path


def resolve_role(owner: Any, root: Any, target: str) -> str | None:
    """Canonical path of ``target`` as written in ``owner``'s docstring, or None if external."""
    if target.split(".")[0] == root.name:
        found = _lookup(root, target)
        return _canonical(found) if found is not None else target
    head, _, tail = target.partition(".")
    scope = owner
    while scope is not None:
        if head in _members(scope):
            found = _lookup(root, f"{scope.path}.{head}" + (f".{tail}" if tail else ""))
            if found is not None:
                return _canonical(found)
        try:
            path = scope.resolve(head)
        except (griffe.NameResolutionError, AttributeError, KeyError, ValueError):
            path = None
        if path:
            full = path + (f".{tail}" if tail else "")
            if full.split(".")[0] != root.name:
                return None  # an external object (torch, ...): shown as code, not linked
            found = _lookup(root, full)
            return _canonical(found) if found is not None else full
        scope = scope.parent
    return target


def rewrite(text: str, owner: Any, root: Any) -> str:
    """Replace every role in ``text`` by a cross-reference (or plain code if external)."""

    def sub(m: re.Match[str]) -> str:
        short, target = m.group(1) == "~", m.group(2)
        shown = target.rsplit(".", 1)[-1] if short else target
        path = resolve_role(owner, root, target)
        return f"[`{shown}`][{path}]" if path else f"`{shown}`"

    return ROLE.sub(sub, text)


LITERAL = re.compile(r"^(?P<lead>\S[^\n]*?)?::\n\n(?P<body>(?:(?:[ \t]+[^\n]*)?\n)+)", re.M)


def fence_literal_blocks(text: str) -> str:
    """``para::`` + indented block (reST) -> ``para:`` + a fenced block (Markdown), at the top level only."""

    def sub(m: re.Match[str]) -> str:
        body = textwrap.dedent(m.group("body")).strip("\n")
        lang = "python" if re.search(r"^(from|import) ", body, re.M) else "text"
        lead = f"{m.group('lead')}:\n\n" if m.group("lead") else ""
        return f"{lead}```{lang}\n{body}\n```\n\n"

    return LITERAL.sub(sub, text + "\n").rstrip("\n")


class SphinxRoles(griffe.Extension):
    """Rewrite Sphinx roles in every docstring of the loaded package."""

    def on_package(self, *, pkg: Any, loader: Any, **kwargs: Any) -> None:
        """Walk the package once it is fully loaded (aliases resolvable)."""
        stack = [pkg]
        while stack:
            obj = stack.pop()
            if obj.is_alias:
                continue
            if obj.docstring is not None:
                if ":`" in obj.docstring.value:
                    obj.docstring.value = rewrite(obj.docstring.value, obj, pkg)
                if "::\n" in obj.docstring.value:
                    obj.docstring.value = fence_literal_blocks(obj.docstring.value)
            stack.extend(obj.members.values())
