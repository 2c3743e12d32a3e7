"""What an objective offers a sampling command: its samplers' names and defaults, their options, its diffusers scheduler.

An objective declares a :class:`SamplingSpec` as its class attribute ``sampling``.
``recipes/sample.py`` builds its ``--sampler``/``--steps`` defaults and the flags of the
objective's options from it, and checks them with it; the pipeline export takes the
diffusers scheduler it names. Neither knows any objective: a new objective declares its
spec and is sampled by both unchanged. An objective without a spec gets
:func:`sampling_spec`'s default (its samplers by their own names, the first as default,
250 steps, no options, the pipeline scheduler of its ``diffusers_scheduler`` default).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Check", "SamplerOption", "SamplingSpec", "sampling_spec"]

Check = Callable[[Any, Mapping[str, Any]], "str | None"]
"""``check(value, flags)``: why ``value`` is refused (one line), or ``None``; ``flags`` holds every flag's value by name."""


@dataclass(frozen=True)
class SamplerOption:
    """One option of an objective's samplers, as a sampling command offers it (``recipes/sample.py``'s ``--flag``).

    Attributes:
        name: the flag in snake case (``"time_shift"`` is ``--time-shift``), also its key in the
            sampling run's records.
        type: the flag's type, as a dataclass field annotation: ``float``, ``int``, ``str``,
            ``float | None`` (accepts ``none``), ``Literal["a", "b"]`` (its choices) or
            ``tuple[float, ...]`` (several values).
        default: the flag's default.
        help: the flag's help line.
        keyword: the keyword of :func:`mdtblocks.sampling.sample` the option sets: one of the
            objective's ``sample`` options, or ``guidance_interval``; ``None``: ``name``.
        samplers: the samplers (the objective's names) that read the option; it is not passed
            to the others. ``()``: every sampler.
        convert: the keyword's value from the flag's (``"none"`` -> ``None``); ``None``: as given.
        check: why a value is refused, or ``None`` (see :data:`Check`); ``None``: every value of
            the type is fine.
    """

    name: str
    type: Any
    default: Any
    help: str
    keyword: str | None = None
    samplers: tuple[str, ...] = ()
    convert: Callable[[Any], Any] | None = None
    check: Check | None = None

    def __post_init__(self) -> None:
        if not (isinstance(self.name, str) and self.name.isidentifier() and self.name == self.name.lower()):
            raise ValueError(f"a sampler option's name is a lower-case identifier (its flag is --name), got {self.name!r}")

    @property
    def flag(self) -> str:
        """The option as a command-line flag: ``--time-shift``."""
        return "--" + self.name.replace("_", "-")

    def value(self, flag_value: Any) -> Any:
        """The keyword's value for the flag's value."""
        return flag_value if self.convert is None else self.convert(flag_value)


@dataclass(frozen=True)
class SamplingSpec:
    """An objective's samplers as a sampling command offers them, and the diffusers scheduler of its pipeline.

    Attributes:
        default_sampler: the sampler (the objective's name) without ``--sampler``; ``None``:
            the objective's first sampler.
        default_steps: the steps without ``--steps``.
        flag_names: samplers the command names otherwise, ``{objective's name: flag name}``
            (the Gaussian diffusion's ``dpm_solver++`` is ``--sampler dpm-solver``); the
            others go by their own names.
        options: the options of the objective's samplers, one flag each.
        pipeline_scheduler: the ``kind`` of ``objective.diffusers_scheduler(kind)`` that an
            exported pipeline uses; ``None``: that method's default (an objective without it
            has no pipeline).
    """

    default_sampler: str | None = None
    default_steps: int = 250
    flag_names: Mapping[str, str] = field(default_factory=dict)
    options: tuple[SamplerOption, ...] = ()
    pipeline_scheduler: str | None = None

    def __post_init__(self) -> None:
        names = [o.name for o in self.options]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"sampler options {twice} are declared twice")
        if isinstance(self.default_steps, bool) or not isinstance(self.default_steps, int) or self.default_steps < 1:
            raise ValueError(f"default_steps must be a positive int, got {self.default_steps!r}")

    def sampler_flags(self, samplers: tuple[str, ...]) -> dict[str, str]:
        """``{flag name: the objective's name}`` of ``samplers`` (the objective's), in their order."""
        return {self.flag_names.get(s, s): s for s in samplers}

    def default_sampler_flag(self, samplers: tuple[str, ...]) -> str:
        """The ``--sampler`` value of the default sampler."""
        name = self.default_sampler if self.default_sampler is not None else samplers[0]
        return self.flag_names.get(name, name)

    def problems(self, values: Mapping[str, Any], flags: Mapping[str, Any]) -> list[str]:
        """Why the options' ``values`` (by name) are refused, one line each (``flags``: every flag's value, these too)."""
        problems = []
        for option in self.options:
            message = option.check(values[option.name], flags) if option.check is not None else None
            if message:
                problems.append(message)
        return problems

    def keywords(self, sampler: str, values: Mapping[str, Any]) -> dict[str, Any]:
        """The keywords of :func:`mdtblocks.sampling.sample` that the options' ``values`` set for ``sampler``."""
        return {
            option.keyword or option.name: option.value(values[option.name])
            for option in self.options
            if not option.samplers or sampler in option.samplers
        }

    def defaults(self) -> dict[str, Any]:
        """Every option's default, by name."""
        return {option.name: option.default for option in self.options}


def sampling_spec(objective: Any) -> SamplingSpec:
    """The objective's declared ``sampling`` spec, or the default one for an objective that declares none."""
    spec = getattr(objective, "sampling", None)
    if spec is None:
        return SamplingSpec()
    if not isinstance(spec, SamplingSpec):
        raise TypeError(f"the {getattr(objective, 'kind', '?')!r} objective's sampling must be a SamplingSpec, got {spec!r}")
    return spec

