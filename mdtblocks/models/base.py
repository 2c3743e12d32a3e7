"""What DiT and MDT share: input embedding, conditioning, output head, validation, presets and files."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, ClassVar, NamedTuple, TypeVar

import torch
from jaxtyping import Float, Int, Shaped
from diffusers import ModelMixin
from torch import Tensor, nn

from ..blocks import FinalLayer, LabelEmbedder, PatchEmbed, TimestepEmbedder, sincos_2d, unpatchify
from ..io import read_json, write_json
from ..masking import MaskSampler, validate_ids_keep
from ..masking.route import RoutePlan
from .config import DiTConfig, config_from_dict
from .inputs import check_inputs
from .presets import preset
from .shards import DEFAULT_MAX_SHARD_SIZE, read_weights, write_weights

__all__ = ["DiffusionBackbone", "EmbeddedInputs"]

M = TypeVar("M", bound="DiffusionBackbone")

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
ALIGN_PREFIX = "alignment_head."  # mdtblocks.alignment.ALIGN_MODULE: a training-only head, never exported


class EmbeddedInputs(NamedTuple):
    """The opening of a forward pass, shared by the backbones (:meth:`DiffusionBackbone.embed_inputs`).

    A named tuple, not a dataclass: ``torch.compile`` traces it without a graph break, so
    a masked pass with a dynamic kept count stays one graph.

    Attributes:
        tokens: ``(b, n, d)`` the patch tokens with the position table added (all ``n``; a
            pass with ``ids_keep`` gathers the kept ones where it needs them).
        c: ``(b, d)`` the conditioning vector ``embed(t) + embed(y)``.
        routes: the pass's checked token routes, in block order (empty without routing).
    """

    tokens: Float[Tensor, "b n d"]
    c: Float[Tensor, "b d"]
    routes: tuple[RoutePlan, ...]


class DiffusionBackbone(ModelMixin):
    """Base of the denoisers: maps ``(x, t, y)`` to the model output, knows nothing of betas.

    Holds the patch, timestep and label embedders, the (fixed or learned) position
    table and the final layer; subclasses define the token mixing in between.

    It is a diffusers ``ModelMixin`` (without ``ConfigMixin``: the constructor keeps its
    typed, frozen config), so diffusers' pipeline loader saves and loads it with the
    methods below; see ``docs/diffusers.md``.

    Attributes:
        check_values: validate tensor values (label range, finite times, mask indices)
            in ``forward``. On by default; a training loop on CUDA may turn it off to
            avoid the host sync it costs.
    """

    config_class: ClassVar[type[DiTConfig]] = DiTConfig

    def __init__(self, config: DiTConfig) -> None:
        super().__init__()
        if not isinstance(config, self.config_class):
            raise TypeError(f"{type(self).__name__} needs a {self.config_class.__name__}, got {type(config).__name__}")
        self.config = config
        self.check_values = True
        d = config.hidden_size
        self.x_embedder = PatchEmbed(config.patch_size, config.in_channels, d)
        self.t_embedder = TimestepEmbedder(d)
        # The null-class row exists iff the config's (legacy) class_dropout_prob is above 0, the
        # official layout; the drops themselves are the criterion's (LabelDropout).
        self.y_embedder = LabelEmbedder(config.num_classes, d, has_null=config.class_dropout_prob > 0)
        n = config.grid[0] * config.grid[1]
        self.pos_embed = nn.Parameter(torch.zeros(1, n, d))
        self.final_layer = FinalLayer(d, config.patch_size, config.out_channels)

    # --- construction -------------------------------------------------------------------
    @classmethod
    def from_preset(cls: type[M], name: str, **overrides: Any) -> M:
        """Build a randomly initialised model from a named preset (e.g. ``"MDTv2-XL/2"``).

        ``overrides`` set or replace config fields, e.g. ``input_size=32, num_classes=1000``.
        """
        fields = preset(name, cls.__name__)
        fields.update(overrides)
        return cls(config_from_dict(cls.config_class, fields))

    def reset_parameters(self) -> None:
        """Official initialisation: sin-cos position table, Xavier linears, adaLN-Zero.

        Each block initialises itself; subclasses extend this for their token mixers.
        """
        for part in (self.x_embedder, self.t_embedder, self.y_embedder, self.final_layer):
            part.reset_parameters()
        self.pos_embed.data.copy_(sincos_2d(self.config.hidden_size, self.config.grid).unsqueeze(0))

    # --- forward pieces -----------------------------------------------------------------
    @property
    def num_tokens(self) -> int:
        """Tokens ``n`` of the full patch grid."""
        gh, gw = self.config.grid
        return gh * gw

    def condition(self, t: Shaped[Tensor, "b"], y: Int[Tensor, "b"]) -> Float[Tensor, "b d"]:
        """Conditioning vector ``c = embed(t) + embed(y)``."""
        return self.t_embedder(t) + self.y_embedder(y)

    def head(self, h: Float[Tensor, "b n d"], c: Float[Tensor, "b dc"]) -> Float[Tensor, "b c2 hh ww"]:
        """Final layer and unpatchify to ``(b, out_channels, H, W)``."""
        cfg = self.config
        return unpatchify(self.final_layer(h, c), cfg.patch_size, cfg.out_channels, cfg.grid)

    def embed_inputs(
        self,
        x: Float[Tensor, "b c hh ww"],
        t: Shaped[Tensor, "b"],
        y: Int[Tensor, "b"],
        ids_keep: Int[Tensor, "b k"] | None = None,
        route: object = None,
    ) -> EmbeddedInputs:
        """Validate the inputs, embed the patches (plus positions) and the condition, check ``ids_keep`` and ``route``.

        ``route`` is checked with the subclass's ``check_route(route, batch, num_kept)``
        against the tokens the pass brings to each span (``num_kept`` with ``ids_keep``).
        """
        self.check_inputs(x, t, y)
        tokens = self.x_embedder(x) + self.pos_embed  # (b, n, d)
        c = self.condition(t, y)  # (b, d)
        num_kept = None
        if ids_keep is not None:
            validate_ids_keep(ids_keep, x.shape[0], self.num_tokens, self.check_values)
            num_kept = ids_keep.shape[1]
        routes = () if route is None else self.check_route(route, x.shape[0], num_kept)
        return EmbeddedInputs(tokens, c, routes)

    def check_route(self, route: object, batch_size: int, num_kept: int | None = None) -> tuple[RoutePlan, ...]:
        """Raise ``TypeError``/``ValueError`` unless ``route`` fits this model and pass; return its routes.

        Backbones that route tokens override this; the base refuses every route.
        """
        raise ValueError(f"{type(self).__name__} does not route tokens (route= is not supported)")

    def check_inputs(self, x: object, t: object, y: object) -> None:
        """Validate ``(x, t, y)`` against the config (see :func:`~mdtblocks.models.inputs.check_inputs`)."""
        check_inputs(self.config, x, t, y, self.y_embedder.has_null, self.check_values)

    def drop_labels(self, y: Int[Tensor, "b"], generator: torch.Generator | None = None) -> Int[Tensor, "b"]:
        """Compatibility: ``y`` with labels dropped as the config's ``class_dropout_prob`` records.

        Label dropout belongs to the criterion: training draws it with the criterion's
        :class:`~mdtblocks.criterion.labels.LabelDropout`; this method applies
        ``LabelDropout.of_model(self)`` with ``generator`` (the global CPU generator if
        ``None``), for code written against it. The model keeps only the null-class row.
        """
        from ..criterion.labels import LabelDropout  # the criterion's rule (a layer above models)

        dropout = LabelDropout.of_model(self)
        drop = dropout.draw(y.shape[0], torch.default_generator if generator is None else generator, y.device)
        return dropout.apply(y, drop, self.config.num_classes)

    @property
    def mask_sampler(self) -> MaskSampler | None:
        """Compatibility view: the mask sampler of the training rule the config's legacy fields record.

        Training policy is the token rule's (:mod:`mdtblocks.tokens`): a run draws its mask
        plans from its criterion's rule, never from here. This view is the sampler of
        :func:`~mdtblocks.tokens.rule_of_config` of the config (MDT, MDTv2: the published
        ratios; MaskDiT: its drop ratio), kept for code and tests that draw plans from the
        model. ``None`` when the config records no masked training (DiT, SiT).
        """
        return None

    # --- feature taps -------------------------------------------------------------------
    def trunk(self) -> list[nn.Module]:
        """The transformer blocks in the order ``forward`` runs them (token maps ``(b, *, d) -> (b, *, d)``)."""
        raise NotImplementedError(f"{type(self).__name__} does not list its blocks")

    kept_only_blocks: int = 0
    """Leading :meth:`trunk` blocks that see only the kept tokens in the masked pass (MDT's encoder)."""

    def block_at(self, depth: int) -> nn.Module:
        """The block whose output is the tokens after ``depth`` blocks (1-based): where a feature tap attaches.

        Raises:
            ValueError: ``depth`` is not in ``[1, depth of the network]``.
        """
        blocks = self.trunk()
        if isinstance(depth, bool) or not isinstance(depth, int) or not 1 <= depth <= len(blocks):
            raise ValueError(f"depth {depth!r} is past {type(self).__name__}'s {len(blocks)} blocks; expected 1..{len(blocks)}")
        return blocks[depth - 1]

    # --- diffusers ----------------------------------------------------------------------
    def to(self, *args: Any, **kwargs: Any) -> DiffusionBackbone:
        """``nn.Module.to``: skips diffusers' quantisation checks (these models are never
        quantised) and its warning on every dtype cast."""
        return nn.Module.to(self, *args, **kwargs)

    # --- files --------------------------------------------------------------------------
    def save_pretrained(
        self,
        directory: str | os.PathLike,
        *,
        variant: str | None = None,
        safe_serialization: bool = True,
        max_shard_size: int | str | None = DEFAULT_MAX_SHARD_SIZE,
        **unused: Any,
    ) -> Path:
        """Write ``config.json`` and ``model.safetensors`` (atomically) into ``directory``.

        Args:
            directory: the folder (created if missing).
            variant: write ``model.<variant>.safetensors`` instead (diffusers' variants, e.g. ``"fp16"``).
            safe_serialization: must be true: weights are only ever written as safetensors.
            max_shard_size: above this size (bytes, or ``"10GB"``, ``"500MB"``; default 10 GB
                as diffusers) the weights are split into ``model-0000i-of-0000n.safetensors``
                shards with a ``model.safetensors.index.json`` (the Hugging Face layout).
            **unused: further arguments diffusers' pipeline ``save_pretrained`` may pass
                (``is_main_process``, ...); one with a non-default value is refused.
        """
        if not safe_serialization:
            raise ValueError("mdtblocks writes weights only as safetensors; safe_serialization must be True")
        _refuse_set(unused, "save_pretrained")
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items() if not k.startswith(ALIGN_PREFIX)}
        weights = _variant_name(WEIGHTS_NAME, variant)
        write_weights(directory, state, weights, DEFAULT_MAX_SHARD_SIZE if max_shard_size is None else max_shard_size)
        write_json(directory / CONFIG_NAME, {"class": type(self).__name__, **self.config.to_dict()})
        return directory

    @classmethod
    def from_pretrained(
        cls: type[M],
        directory: str | os.PathLike,
        weights_name: str = WEIGHTS_NAME,
        *,
        torch_dtype: torch.dtype | None = None,
        variant: str | None = None,
        subfolder: str | None = None,
        **overrides: Any,
    ) -> M:
        """Load a model written by :meth:`save_pretrained`.

        This is also the method diffusers' pipeline loader calls for a pipeline's
        ``transformer`` folder (the class is a diffusers ``ModelMixin``).

        Args:
            directory: folder holding ``config.json`` and the weights, or a Hugging Face Hub
                repo id ``"owner/name"`` (downloaded when online; the local folder wins).
            weights_name: the safetensors file to load (e.g. ``"ema.safetensors"`` in a
                training checkpoint).
            torch_dtype: cast the loaded model to this dtype.
            variant: load ``model.<variant>.safetensors``.
            subfolder: a folder inside ``directory`` (or the repo).
            **overrides: config fields that do not change the weights (e.g. ``attention_backend``);
                the loader arguments diffusers passes (``device_map``, ``low_cpu_mem_usage``, ...)
                are accepted at their defaults.
        """
        for key in _LOADER_ARGS:
            value = overrides.pop(key, None)
            if value not in (None, True, False) or (key in _LOADER_NONE and value is not None):
                raise ValueError(f"{cls.__name__}.from_pretrained does not support {key}={value!r}")
        directory = _resolve_folder(directory, subfolder)
        data = read_json(directory / CONFIG_NAME)
        saved_cls = data.pop("class", cls.__name__)
        if saved_cls != cls.__name__:
            raise ValueError(f"{directory} holds a {saved_cls}, not a {cls.__name__}")
        data.update(overrides)
        model = cls(config_from_dict(cls.config_class, data))
        state = read_weights(directory, _variant_name(weights_name, variant))  # one file or an index of shards
        # A training checkpoint of an aligned run holds the alignment head (REPA's projector): not part of the model.
        state = {k: v for k, v in state.items() if not k.startswith(ALIGN_PREFIX)}
        model.load_state_dict(state, strict=True)
        if torch_dtype is not None:
            model.to(torch_dtype)
        return model.eval()


# Arguments diffusers' pipeline loader passes to a ModelMixin's from_pretrained.
_LOADER_NONE = ("device_map", "max_memory", "offload_folder", "quantization_config", "dduf_entries")
_LOADER_ARGS = _LOADER_NONE + (
    "offload_state_dict", "use_safetensors", "low_cpu_mem_usage", "use_flashpack", "disable_mmap",
)
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def _refuse_set(unused: dict[str, Any], where: str) -> None:
    for key, value in unused.items():
        if value not in (None, True, False):
            raise ValueError(f"{where} does not support {key}={value!r}")


def _variant_name(weights_name: str, variant: str | None) -> str:
    """``model.safetensors`` -> ``model.fp16.safetensors`` (diffusers' variant naming)."""
    if variant is None:
        return weights_name
    stem, dot, ext = weights_name.rpartition(".")
    return f"{stem}.{variant}.{ext}" if dot else f"{weights_name}.{variant}"


def _resolve_folder(directory: str | os.PathLike, subfolder: str | None) -> Path:
    """A local folder, or a Hub repo id fetched into the local cache (only when not a local path)."""
    path = Path(directory)
    if not path.exists() and isinstance(directory, str) and _REPO_ID.match(directory):
        from huggingface_hub import snapshot_download  # only for repo ids: never needed offline

        path = Path(snapshot_download(directory, allow_patterns=[f"{subfolder}/*"] if subfolder else None))
    return path / subfolder if subfolder else path
