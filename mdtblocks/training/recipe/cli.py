"""Recipe flags: a typed config whose every field is a documented ``--flag``, and the command line parsed into it."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import types
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from ...data import DEFAULT_VAE
from ...models import PRESETS
from .axes import RECIPE_TOKENS, objective_names

__all__ = [
    "flag", "default_num_workers", "presets_of", "RecipeConfig", "build_parser", "add_flags", "parse_flags", "to_argv",
    "choose_config", "exit_on_bad_input",
]

C = TypeVar("C")


def flag(default: Any, help: str, choices: Sequence[str] | None = None, metavar: str | None = None) -> Any:  # noqa: A002
    """A dataclass field that is also a documented command-line flag (``choices`` restricts its values)."""
    return field(
        default=default, metadata={"help": help, "choices": list(choices) if choices else None, "metavar": metavar}
    )


def default_num_workers(cap: int = 8) -> int:
    """Data-loading workers per process: the CPU cores this process may use (``os.sched_getaffinity``),
    shared among the processes of this node under torchrun (``LOCAL_WORLD_SIZE``), at least 1 and at most ``cap``."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        cores = os.cpu_count() or 1
    local = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1))
    return max(1, min(cap, cores // local))


def presets_of(family: str) -> list[str]:
    """Preset names of one family (``"MDTv2"``, ``"MDT"``, ``"DiT"``), for a recipe's ``--model`` choices."""
    return [name for name in PRESETS if name.split("-")[0] == family]


@dataclass(frozen=True)
class RecipeConfig:
    """Flags every recipe has (``--data``, ``--out``, ``--model``, ...). Recipes subclass it."""

    data: str | None = flag(
        None, "image folder: one subfolder per class (ImageNet train/), or ADM flat files named ClassID_ImgID.ext; "
        "none: the built-in digits demo", metavar="DIR"
    )
    latents: str | None = flag(
        None, "latent cache folder (recipes/extract_latents.py) to train from instead of --data", metavar="DIR"
    )
    out: str = flag("runs/run", "run folder; rerunning with the same --out resumes from its newest checkpoint", metavar="DIR")
    model: str = flag("MDTv2-XL/2", "model preset name (mdtblocks.PRESETS)")
    depth: int | None = flag(None, "override the preset's depth")
    hidden_size: int | None = flag(None, "override the preset's width")
    num_heads: int | None = flag(None, "override the preset's attention heads")
    decode_layer: int | None = flag(None, "override the preset's decoder blocks (MDT, MDTv2)")
    mask_ratio: float | None = flag(
        None, "the token rule's (lower end of the) mask ratio (MDT, MDTv2; MaskDiT: its drop ratio); "
        "default: the preset's published one"
    )
    mask_ratio_range: float | None = flag(
        None, "the token rule's width of the mask ratio interval (MDT, MDTv2); default: the preset's published one"
    )
    image_size: int = flag(256, "image side in pixels")
    flip: bool = flag(
        True, "add the mirrored copy of every image (horizontal flips double the data); the built-in digits turn it "
        "off, as a mirrored digit is not a digit"
    )
    num_classes: int | None = flag(None, "classes; none: taken from the dataset")
    vae: str | None = flag(
        DEFAULT_VAE, "diffusers AutoencoderKL name or folder; 'none' trains in pixel space", metavar="NAME_OR_DIR"
    )
    steps: int = flag(400_000, "optimizer steps")
    global_batch_size: int = flag(256, "samples per optimizer step over all processes")
    micro_batch_size: int | None = flag(None, "samples per process per forward (gradient accumulation); none: no accumulation")
    lr: float | None = flag(1e-4, "learning rate (constant); none: the recipe's value for the model size")
    optimizer: Literal["adamw", "adan"] = flag("adamw", "optimizer")
    adan_betas: tuple[float, ...] = flag((0.98, 0.92, 0.99), "Adan betas (with --optimizer adan)")
    snr_gamma: float | None = flag(None, "min-SNR-gamma loss weighting; none: unweighted")
    weight_decay: float = flag(0.0, "weight decay")
    grad_clip: float | None = flag(None, "global gradient-norm clip; none: no clipping")
    ema_decay: float = flag(0.9999, "EMA decay per step")
    masked_draws: Literal["independent", "shared"] = flag(
        "independent", "masked pass (MDT, MDTv2): its own noise and label drops (the official trainers), or "
        "those of the unmasked pass (shared: 1.6x the gradient variance)"
    )
    pipeline: bool = flag(
        True, "at the end of the run write OUT/pipeline: an MDTPipeline folder (diffusers layout) of the EMA weights"
    )
    official: bool = flag(
        False, "train exactly as the official script: its optimizer, clipping, loss weighting, weight decay, "
        "mask ratios, EMA 0.9999 and independent masked-pass draws (a flag that contradicts them is refused)"
    )
    seed: int = flag(0, "seed of every random draw")
    ckpt_every: int = flag(10_000, "checkpoint and sample grid every N steps")
    log_every: int = flag(100, "log metrics every N steps")
    keep_checkpoints: int | None = flag(
        None, "keep only the newest N checkpoints (older ones removed once a new one is complete); none: keep all"
    )
    max_bad_steps: int = flag(10, "stop after this many non-finite (skipped) steps in a row")
    precision: Literal["fp32", "bf16"] = flag("fp32", "bf16 autocasts the model forward (fp32 weights and diffusion math)")
    device: Literal["auto", "cpu", "cuda"] = flag("auto", "training device")
    fsdp: bool = flag(False, "shard parameters with FSDP (fully_shard) instead of DDP, for XL models")
    compile: bool = flag(False, "torch.compile the model")
    compile_blocks: bool = flag(
        False, "torch.compile each transformer block instead of the whole model (less to compile); not with --compile"
    )
    activation_checkpointing: bool = flag(False, "recompute block activations in backward to save memory")
    num_workers: int = flag(default_num_workers(), "DataLoader workers per process (by default the cores available to it, divided among processes under torchrun)")
    num_samples: int = flag(16, "images in each checkpoint's sample grid")
    sample_steps: int = flag(50, "steps for the sample grids (DDIM; Euler ODE with --objective flow)")
    sample_cfg_scale: float = flag(4.0, "classifier-free guidance scale of the sample grids (1: none)")
    # Training axes (mdtblocks.training.recipe.axes): token routing, the objective, a start from other weights.
    tokens: str = flag(
        "preset", "token rule of a training step: the preset's (MDT: two passes; MaskDiT: dropping; DiT: plain), "
        "plain (every token, one pass: MDT without its masked pass), or maskdit_drop (half the tokens dropped, MAE "
        "on them: MaskDiT's step, on MDT backbones too); --mask-ratio sets its ratio",
        choices=tuple(RECIPE_TOKENS),
    )
    route: float | None = flag(
        None, "TREAD token routing: share of tokens that skip --route-span in training, in (0, 1); none: no routing",
        metavar="RATIO",
    )
    route_span: tuple[int, ...] | None = flag(
        None, "START END: the blocks [START, END) routed tokens skip; none: the model's default span (block 2 to depth-3, "
        "MDT: within the encoder)"
    )
    objective: str = flag(
        "gaussian", "training objective: ADM's Gaussian diffusion, flow matching (SiT's interpolants; the --flow-* "
        "flags) or EDM (the --edm-* flags); its samplers draw the sample grids", choices=objective_names()
    )
    edm_p_mean: float = flag(-1.2, "EDM: mean of ln(sigma) in training (--objective edm)")
    edm_p_std: float = flag(1.2, "EDM: standard deviation of ln(sigma) in training (--objective edm)")
    edm_sigma_data: float = flag(0.5, "EDM: data standard deviation of the preconditioning (--objective edm)")
    init_from: str | None = flag(
        None, "start a new run from these EMA weights (a checkpoint folder, or a run folder's newest checkpoint); "
        "a run that resumes from its own checkpoint ignores it", metavar="DIR"
    )
    flow_path: Literal["Linear", "GVP", "VP"] = flag("Linear", "flow path (with --objective flow)")
    flow_prediction: Literal["velocity", "score", "noise"] = flag("velocity", "what the network predicts (--objective flow)")
    flow_loss_weight: str | None = flag(
        None, "loss weight of score and noise predictions: velocity or likelihood; none: unweighted (--objective flow)"
    )
    flow_time_sampler: Literal["uniform", "logit_normal"] = flag("uniform", "training-time distribution (--objective flow)")
    flow_logit_mean: float = flag(0.0, "mean of the logit-normal times (--objective flow)")
    flow_logit_scale: float = flag(1.0, "scale of the logit-normal times (--objective flow)")
    flow_cosine_weight: float = flag(0.0, "weight of the velocity cosine-similarity term; 0: off (--objective flow)")
    flow_train_eps: float | None = flag(None, "shortening of the training time interval; none: SiT's (--objective flow)")
    flow_sample_eps: float | None = flag(None, "shortening of the sampling time interval; none: SiT's (--objective flow)")
    # Representation alignment (an extra loss of the criterion; mdtblocks.training.recipe.align).
    align: Literal["none", "repa", "dispersive"] = flag(
        "none", "alignment loss on one block's tokens: REPA (needs --align-encoder) or the weight-free Dispersive loss"
    )
    align_encoder: str | None = flag(
        None, "REPA's frozen encoder: a local DINOv2 folder, or 'inception' (the FID InceptionV3, offline)", metavar="DIR"
    )
    align_depth: int | None = flag(None, "block whose output is aligned (1-based); none: 2/7 of the depth (8 of 28)")
    align_coeff: float | None = flag(None, "coefficient of the alignment loss; none: 0.5 (REPA), 0.25 (Dispersive)")
    align_pass: Literal["plain", "masked", "both"] = flag(
        "plain", "which MDT pass is aligned: the plain pass (all tokens), the masked one (kept tokens), or both"
    )
    align_projector_dim: int = flag(2048, "hidden width of REPA's 3-layer projector")

    @property
    def builtin(self) -> bool:
        """No ``--data`` and no ``--latents``: the built-in digits demo."""
        return self.data is None and self.latents is None


def _kind(tp: Any) -> tuple[Any, bool]:
    """``(base type, optional)`` of a field annotation such as ``int | None``."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return (args[0] if len(args) == 1 else tp), type(None) in typing.get_args(tp)
    return tp, False


def _converter(base: Any, optional: bool, name: str) -> Any:
    def convert(text: str) -> Any:
        if optional and text.lower() in ("none", "null"):
            return None
        try:
            return base(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"--{name}: expected {base.__name__}, got {text!r}") from None

    return convert


def build_parser(cls: type, description: str = "", defaults: Any = None) -> argparse.ArgumentParser:
    """An ``argparse`` parser with one ``--kebab-case`` flag per field of the dataclass ``cls``.

    Defaults are suppressed so that :func:`parse_flags` can tell given flags from defaults;
    the help text shows each field's default (that of the instance ``defaults`` when given).
    Optional fields accept ``none``.
    """
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_flags(parser, cls, defaults)
    return parser


def add_flags(parser: Any, cls: type, defaults: Any = None) -> None:
    """Add one ``--kebab-case`` flag per field of the dataclass ``cls`` to ``parser`` (a parser or an argument group),
    as :func:`build_parser` does."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        name = f.name.replace("_", "-")
        base, optional = _kind(hints[f.name])
        default = f.default if defaults is None else getattr(defaults, f.name)
        help_text = f"{f.metadata.get('help', '')} (default: {default})"
        kwargs: dict[str, Any] = {"dest": f.name, "default": argparse.SUPPRESS, "help": help_text}
        if base is bool:
            parser.add_argument(f"--{name}", action=argparse.BooleanOptionalAction, **kwargs)
        elif typing.get_origin(base) is Literal:
            parser.add_argument(f"--{name}", choices=list(typing.get_args(base)), **kwargs)
        elif typing.get_origin(base) is tuple:
            item = typing.get_args(base)[0]
            parser.add_argument(f"--{name}", nargs="+", type=item, metavar=item.__name__.upper(), **kwargs)
        elif f.metadata.get("choices"):
            parser.add_argument(f"--{name}", choices=f.metadata["choices"], **kwargs)
        else:
            metavar = f.metadata.get("metavar") or base.__name__.upper()
            parser.add_argument(f"--{name}", type=_converter(base, optional, name), metavar=metavar, **kwargs)


def parse_flags(
    cls: type[C], argv: Sequence[str] | None = None, description: str = "", defaults: C | None = None
) -> dict[str, Any]:
    """The fields given on the command line, as ``{field: value}`` (defaults left out)."""
    namespace = build_parser(cls, description, defaults).parse_args(argv)
    given = vars(namespace)
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if f.name in given and isinstance(given[f.name], list):
            given[f.name] = tuple(given[f.name])
    return given


def to_argv(cfg: Any) -> list[str]:
    """The command-line flags that :func:`parse_flags` reads back into ``cfg`` (a flag dataclass instance): every field.

    For a recipe that starts itself again in another process with the same settings.

    Raises:
        TypeError: ``cfg`` is not a dataclass instance.
        ValueError: a field's value has no flag spelling (an empty tuple that is not the
            field's default, or ``None`` for a tuple field), naming the field.
    """
    if not dataclasses.is_dataclass(cfg) or isinstance(cfg, type):
        raise TypeError(f"to_argv: expected a dataclass instance of flags, got {type(cfg).__name__}")
    hints = typing.get_type_hints(type(cfg))
    argv: list[str] = []
    for f in dataclasses.fields(cfg):
        value, name = getattr(cfg, f.name), "--" + f.name.replace("_", "-")
        base, _ = _kind(hints[f.name])
        if isinstance(value, bool):
            argv.append(name if value else "--no-" + name[2:])
        elif typing.get_origin(base) is tuple:
            if value is None or (not value and value != f.default):
                raise ValueError(f"to_argv: {name} = {value!r} has no flag spelling (expected one or more values)")
            argv += [name, *map(_spelling, value)] if value else []
        else:
            argv += [name, "none" if value is None else _spelling(value)]
    return argv


def _spelling(value: Any) -> str:
    return repr(value) if isinstance(value, float) else str(value)  # repr: a float reads back bit for bit


def choose_config(
    cls: type[C], builtin: C, argv: Sequence[str] | None = None, description: str = "", defaults: C | None = None
) -> tuple[C, bool]:
    """Parse the command line into ``cls``; without ``--data`` and ``--latents`` start from ``builtin``.

    Flags given on the command line always win; the built-in demo only changes the
    defaults (dataset, model size, steps), never the code path. A real run starts from
    ``defaults`` (default: ``cls()``).

    Returns:
        ``(config, is_builtin)``.
    """
    given = parse_flags(cls, argv, description, defaults)
    if "data" in given or "latents" in given:
        return (cls(**given) if defaults is None else dataclasses.replace(defaults, **given)), False  # type: ignore[type-var]
    return dataclasses.replace(builtin, **given), True  # type: ignore[type-var]




def exit_on_bad_input(main: Callable[[], Any]) -> int:
    """Run a script's ``main``; bad input (``ValueError``, ``TypeError``, a missing or existing file) becomes one line and exit 2.

    ``main`` raises for callers that import it (tests, notebooks); a person at a shell gets
    ``error: <message>`` on stderr instead of a traceback from deep inside the library.
    """
    try:
        main()
    except (ValueError, TypeError, FileNotFoundError, FileExistsError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0
