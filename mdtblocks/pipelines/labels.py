"""Class labels for a pipeline call: ints, or names looked up in an ``id2label`` table."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from jaxtyping import Int
from torch import Tensor

__all__ = ["label_table", "resolve_labels"]


def label_table(id2label: Mapping[int | str, str] | None) -> dict[str, int]:
    """Name -> id, with each comma-separated synonym of a label a name of its own (the
    ImageNet ``id2label`` convention that diffusers' DiT pipeline reads)."""
    names: dict[str, int] = {}
    for key, value in (id2label or {}).items():
        if not isinstance(value, str):
            raise TypeError(f"id2label values must be strings, got {value!r} for id {key!r}")
        for name in value.split(","):
            names[name.strip()] = int(key)
    return dict(sorted(names.items()))


def resolve_labels(
    labels: int | str | Sequence[int | str] | Tensor, names: Mapping[str, int], num_classes: int
) -> Int[Tensor, "b"]:
    """``(b,)`` int64 labels from ints and names, each checked to lie in ``[0, num_classes)``.

    Raises:
        ValueError: for an unknown name (the table's size and a few names are shown), a
            label out of range, or an empty list.
        TypeError: for a value that is neither an int nor a string.
    """
    if isinstance(labels, Tensor):
        if labels.is_floating_point() or labels.dtype == torch.bool or labels.ndim > 1:
            raise TypeError(f"class_labels as a tensor must be a 0-d or 1-d int tensor, got {labels.dtype} {tuple(labels.shape)}")
        items: list[int | str] = [int(v) for v in labels.reshape(-1).tolist()]
    elif isinstance(labels, (int, str)):
        items = [labels]
    else:
        items = list(labels)
    if not items:
        raise ValueError("class_labels is empty; give at least one label")
    ids = []
    for item in items:
        if isinstance(item, str):
            if item not in names:
                shown = ", ".join(list(names)[:5]) or "none: this pipeline has no id2label table"
                raise ValueError(f"unknown label name {item!r}; {len(names)} names are known ({shown}, ...)")
            ids.append(names[item])
        elif isinstance(item, int) and not isinstance(item, bool):
            ids.append(item)
        else:
            raise TypeError(f"a class label must be an int or a name, got {item!r} ({type(item).__name__})")
    for i in ids:
        if not 0 <= i < num_classes:
            raise ValueError(f"class label {i} is out of range; this model has classes 0..{num_classes - 1}")
    return torch.tensor(ids, dtype=torch.long)
