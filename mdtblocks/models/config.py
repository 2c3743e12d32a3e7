"""Frozen, typed configurations of the model families."""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Mapping
from dataclasses import asdict, dataclass, fields
from dataclasses import fields as fields_of
from typing import Any, TypeVar

from ..blocks.attention import BACKENDS

__all__ = ["DiTConfig", "MDTConfig", "MaskDiTConfig", "ConfigProblem", "config_problems", "config_from_dict"]

C = TypeVar("C")


_INT_FIELDS = ("input_size", "patch_size", "in_channels", "hidden_size", "depth", "num_heads", "num_classes")


@dataclass(frozen=True)
class ConfigProblem:
    """One thing wrong with a model configuration: the field, its value, what is wrong and what would be valid.

    ``problem`` and ``valid`` may name other fields as ``{field}`` placeholders, so a
    command line can print its flag names where the library prints field names.

    Attributes:
        field: the config field at fault (``"num_heads"``).
        value: its value.
        problem: what is wrong (``"does not divide {hidden_size} 384"``).
        valid: what would be valid (``"a divisor of 384: 1, 2, 3, ..."``).
        wrong_type: the value has the wrong type (a ``TypeError``, not a ``ValueError``).
    """

    field: str
    value: Any
    problem: str
    valid: str
    wrong_type: bool = False

    def message(self, name: Callable[[str], str] | None = None) -> str:
        """One sentence: ``"<name> <value> <problem>; valid: <valid>"``.

        Args:
            name: how to call a field (default: its own name); a recipe passes ``--flag`` names.
        """
        label = name or (lambda f: f)
        names = _FieldNames(label)
        problem, valid = self.problem.format_map(names), self.valid.format_map(names)
        return f"{label(self.field)} {_show(self.value)} {problem}; valid: {valid}"

    def error(self) -> ValueError | TypeError:
        """The exception a model constructor raises for this problem."""
        return (TypeError if self.wrong_type else ValueError)(self.message())


class _FieldNames(dict):
    def __init__(self, label: Callable[[str], str]) -> None:
        super().__init__()
        self.label = label

    def __missing__(self, key: str) -> str:
        return self.label(key)


def _show(value: Any) -> str:
    return repr(value) if isinstance(value, str) else str(value)


def _divisors(n: int, limit: int = 12) -> str:
    found = [k for k in range(1, n + 1) if n % k == 0]
    return ", ".join(map(str, found[:limit])) + (", ..." if len(found) > limit else "")


def config_problems(cls: type, fields: Mapping[str, Any], skip: Collection[str] = ()) -> list[ConfigProblem]:
    """Everything wrong with the config ``cls(**fields)`` would have, without building it (empty: nothing).

    The model constructors raise the first of these (:meth:`ConfigProblem.error`), so a
    command line that checks its flags with this function before building anything prints
    the same sentences (with its flag names, :meth:`ConfigProblem.message`).

    Args:
        cls: :class:`DiTConfig` or :class:`MDTConfig`.
        fields: config fields; missing ones take the class defaults.
        skip: fields not known yet (e.g. ``input_size`` before the data is read): not checked.
    """
    values = {f.name: f.default for f in fields_of(cls)}
    values.update(fields)
    v = values
    problems: list[ConfigProblem] = []
    bad = set(skip)
    for name in _INT_FIELDS:
        if name in skip:
            continue
        value = v[name]
        lowest = 0 if name == "depth" else 1
        if isinstance(value, bool) or not isinstance(value, int):
            problems.append(ConfigProblem(name, value, "is not an int", f"an int of at least {lowest}", wrong_type=True))
            bad.add(name)
        elif value < lowest:
            problems.append(ConfigProblem(name, value, "is too small", f"an int of at least {lowest}"))
            bad.add(name)
    if not bad & {"input_size", "patch_size"} and v["input_size"] % v["patch_size"]:
        p = v["patch_size"]
        problems.append(
            ConfigProblem("input_size", v["input_size"], f"is not divisible by {{patch_size}} {p}", f"a multiple of {p}")
        )
    if not bad & {"hidden_size", "num_heads"} and v["hidden_size"] % v["num_heads"]:
        d = v["hidden_size"]
        problems.append(ConfigProblem(
            "num_heads", v["num_heads"], f"does not divide {{hidden_size}} {d}", f"a divisor of {d}: {_divisors(d)}"
        ))
    if "hidden_size" not in bad and v["hidden_size"] % 4:
        problems.append(ConfigProblem(
            "hidden_size", v["hidden_size"], "is not divisible by 4 (2-D sin-cos positions)", "a multiple of 4"
        ))
    mlp = v["mlp_ratio"]
    if isinstance(mlp, bool) or not isinstance(mlp, (int, float)) or not math.isfinite(mlp) or mlp <= 0:
        problems.append(
            ConfigProblem("mlp_ratio", mlp, "is not a positive number", "a finite number above 0 (4.0 officially)")
        )
    elif "hidden_size" not in bad and int(v["hidden_size"] * mlp) < 1:
        problems.append(ConfigProblem(
            "mlp_ratio", mlp, f"leaves no MLP width for {{hidden_size}} {v['hidden_size']}",
            f"at least {1 / v['hidden_size']:g}",
        ))
    if not 0.0 <= v["class_dropout_prob"] < 1.0:
        problems.append(ConfigProblem("class_dropout_prob", v["class_dropout_prob"], "is outside [0, 1)", "[0, 1)"))
    if v["attention_backend"] not in BACKENDS:
        problems.append(ConfigProblem(
            "attention_backend", v["attention_backend"], "is not a backend", f"one of {', '.join(BACKENDS)}"
        ))
    if "decode_layer" in v:
        dl, depth = v["decode_layer"], v["depth"]
        if isinstance(dl, bool) or not isinstance(dl, int):
            problems.append(ConfigProblem("decode_layer", dl, "is not an int", "an int of at least 0", wrong_type=True))
        elif "depth" not in bad and not 0 <= dl <= depth:
            where = f"exceeds {{depth}} {depth}" if dl > depth else "is negative"
            problems.append(ConfigProblem("decode_layer", dl, where, f"0 to {depth} (at most {{depth}})"))
        if not isinstance(v["side_blocks"], int) or v["side_blocks"] < 1:
            problems.append(ConfigProblem("side_blocks", v["side_blocks"], "is too small", "an int of at least 1 (1 officially)"))
        ratio, width = v["mask_ratio"], v["mask_ratio_range"]
        if ratio is not None and not (math.isfinite(ratio) and 0.0 <= ratio < 1.0):
            problems.append(ConfigProblem("mask_ratio", ratio, "is outside [0, 1)", "[0, 1), or None for no masked training"))
        elif not (math.isfinite(width) and 0.0 <= width < 1.0):
            problems.append(ConfigProblem("mask_ratio_range", width, "is outside [0, 1)", "[0, 1)"))
        elif ratio is not None and ratio + width >= 1.0:
            problems.append(ConfigProblem(
                "mask_ratio_range", width, f"added to {{mask_ratio}} {ratio} reaches 1 (every token masked)",
                f"below {1.0 - ratio:g}"
            ))
    return problems


def _check(cfg: Any) -> None:
    problems = config_problems(type(cfg), {f.name: getattr(cfg, f.name) for f in fields_of(cfg)})
    if problems:
        raise problems[0].error()


@dataclass(frozen=True)
class DiTConfig:
    """Sizes of a :class:`~mdtblocks.DiT`.

    Attributes:
        input_size: side of the square input (latent cells or pixels).
        patch_size: side of a patch.
        in_channels: input channels (4 for SD-VAE latents).
        hidden_size: width ``d``.
        depth: number of transformer blocks.
        num_heads: attention heads.
        mlp_ratio: MLP width multiple.
        num_classes: real classes; the null class ``num_classes`` exists iff ``class_dropout_prob > 0``.
        class_dropout_prob: the legacy record of the label dropout the model was published
            (or a legacy run trained) with; it decides whether the null-class row exists.
            The drops are the criterion's :class:`~mdtblocks.criterion.labels.LabelDropout`
            (:meth:`~mdtblocks.criterion.labels.LabelDropout.of_model` maps this field).
        learn_sigma: predict the variance too (output channels doubled).
        attention_backend: ``"sdpa"``, ``"xformers"`` or ``"math"``.
    """

    input_size: int = 32
    patch_size: int = 2
    in_channels: int = 4
    hidden_size: int = 1152
    depth: int = 28
    num_heads: int = 16
    mlp_ratio: float = 4.0
    num_classes: int = 1000
    class_dropout_prob: float = 0.1
    learn_sigma: bool = True
    attention_backend: str = "sdpa"

    def __post_init__(self) -> None:
        _check(self)

    @property
    def out_channels(self) -> int:
        """Output channels: twice the input channels when sigma is learned."""
        return self.in_channels * (2 if self.learn_sigma else 1)

    @property
    def grid(self) -> tuple[int, int]:
        """Patch grid ``(gh, gw)``."""
        side = self.input_size // self.patch_size
        return (side, side)

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form."""
        return asdict(self)


@dataclass(frozen=True)
class MDTConfig(DiTConfig):
    """Sizes of a :class:`~mdtblocks.MaskedDiffusionTransformer` (MDT v1 or MDTv2), and the legacy record of its mask ratios.

    The mask ratios are training policy, owned by the token rule
    (:class:`~mdtblocks.tokens.MaskedTwoPassRule`, recorded in a run's
    ``config.json["criterion"]``). The two ``mask_ratio`` fields stay so that presets,
    official checkpoints and old config files keep their published ratios: they are read
    only by :func:`~mdtblocks.tokens.rule_of_config` (the rule they record) and the model's
    compatibility :attr:`~mdtblocks.MaskedDiffusionTransformer.mask_sampler`; the forward
    pass never reads them.

    Attributes:
        depth: transformer blocks outside the side-interpolater. MDT v1: ``depth -
            decode_layer`` encoder blocks, then ``decode_layer`` decoder blocks. MDTv2
            (``long_skip``): ``2 * ((depth - decode_layer) // 2)`` encoder blocks in two
            halves joined by long shortcuts, as the official code builds them.
        decode_layer: decoder blocks after the side-interpolater.
        side_blocks: blocks inside the side-interpolater (1 officially).
        mask_ratio: legacy record: lower end of the published training mask ratio (0.3),
            ``None`` for no masked training (the side-interpolater still exists).
        mask_ratio_range: legacy record: width of the per-batch random ratio interval (MDTv2: 0.2).
        long_skip: MDTv2's long shortcuts from the first to the second encoder half.
        dense_skip: MDTv2's dense shortcut of the input tokens into every decoder block.
    """

    decode_layer: int = 2
    side_blocks: int = 1
    mask_ratio: float | None = 0.3
    mask_ratio_range: float = 0.0
    long_skip: bool = False
    dense_skip: bool = False

    def __post_init__(self) -> None:
        _check(self)

    @property
    def encoder_depth(self) -> int:
        """Encoder blocks (before the side-interpolater)."""
        rest = self.depth - self.decode_layer
        return 2 * (rest // 2) if self.long_skip else rest


@dataclass(frozen=True)
class MaskDiTConfig(DiTConfig):
    """Sizes of a :class:`~mdtblocks.models.maskdit.MaskDiT` (Zheng et al., TMLR 2024).

    The encoder is a DiT of ``depth`` blocks of width ``hidden_size``; the decoder has
    ``decoder_depth`` blocks of width ``decoder_hidden_size`` (official: 8 blocks of 512
    with 16 heads, for every encoder size), conditioned on the encoder-width ``c``.
    Labels embed linearly with a zero null class, and the variance is not learned
    (EDM's preconditioning has no use for it): ``learn_sigma`` defaults to false.

    Attributes:
        decoder_hidden_size: decoder width.
        decoder_depth: decoder blocks.
        decoder_num_heads: decoder attention heads.
        mask_ratio: legacy record of the published drop ratio (official: 0.5; 0 or ``None``:
            no dropping, the unmasked fine-tune). Training drops with the criterion's
            :class:`~mdtblocks.tokens.MaskDiTDropRule`; :func:`~mdtblocks.tokens.rule_of_config`
            maps this field to it.
    """

    learn_sigma: bool = False
    decoder_hidden_size: int = 512
    decoder_depth: int = 8
    decoder_num_heads: int = 16
    mask_ratio: float | None = 0.5

    def __post_init__(self) -> None:
        _check(self)
        for name in ("decoder_hidden_size", "decoder_depth", "decoder_num_heads"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < (0 if name == "decoder_depth" else 1):
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if self.decoder_hidden_size % self.decoder_num_heads or self.decoder_hidden_size % 4:
            raise ValueError(
                f"decoder_hidden_size {self.decoder_hidden_size} must be divisible by decoder_num_heads "
                f"{self.decoder_num_heads} and by 4"
            )
        if self.mask_ratio is not None and (
            isinstance(self.mask_ratio, bool) or not isinstance(self.mask_ratio, (int, float)) or not 0.0 <= self.mask_ratio < 1.0
        ):
            raise ValueError(f"mask_ratio must lie in [0, 1) or be None, got {self.mask_ratio!r}")


def config_from_dict(cls: type[C], data: dict[str, Any]) -> C:
    """Build ``cls`` from a dict, rejecting unknown keys by name."""
    known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} fields {unknown}; expected a subset of {sorted(known)}")
    return cls(**data)
