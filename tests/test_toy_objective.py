"""A new objective written outside the package, against the public interface only: x0-prediction on a cosine path.

It trains three steps through :func:`mdtblocks.training.train` with MDTv2's two-pass
token rule and with DiT's plain rule, is recorded in the run's criterion record and
rebuilt from it, and samples (with guidance) through :func:`mdtblocks.sampling.sample`.
With a declared sampling spec (its defaults, an option) and a loop over a diffusers
scheduler, ``recipes/sample.py`` and the exported pipeline sample it too.
No module of ``mdtblocks`` and no recipe knows it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch
from helpers import tiny_dit, tiny_mdt
from safetensors.torch import load_file, save_file
from torch import Tensor
from torch.utils.data import TensorDataset
from training_utils import load_recipe

from mdtblocks.criterion import Criterion, LabelDropout, read_criterion
from mdtblocks.data import PixelSpace
from mdtblocks.io import write_json
from mdtblocks.objectives import GaussianObjective, Objective, SamplerOption, SamplingSpec, register_objective
from mdtblocks.sampling import sample
from mdtblocks.tokens import MaskedTwoPassRule, PlainRule
from mdtblocks.training import TrainConfig, setup_distributed, train


@dataclass(frozen=True)
class CosineX0:
    """x_t = cos(pi t / 2) x_0 + sin(pi t / 2) noise, t uniform in [0, 1]; the network predicts x_0 at time ``scale * t``."""

    kind: ClassVar[str] = "test_cosine_x0"
    samplers: ClassVar[tuple[str, ...]] = ("ddim_x0",)
    scale: float = 1000.0

    @staticmethod
    def _path(t: Tensor) -> tuple[Tensor, Tensor]:
        a, s = torch.cos(t * math.pi / 2), torch.sin(t * math.pi / 2)
        return a.view(-1, 1, 1, 1), s.view(-1, 1, 1, 1)

    def draw_times(self, n: int, generator: torch.Generator) -> Tensor:
        return torch.rand(n, generator=generator, device=generator.device) * 0.98 + 0.01

    def draw_noise(self, x_start: Tensor, generator: torch.Generator) -> Tensor:
        return torch.randn(x_start.shape, generator=generator, device=generator.device).to(x_start.device)

    def losses(self, net: Callable[..., Tensor], x_start: Tensor, times: Tensor, noise: Tensor,
               model_kwargs: Mapping[str, Any]) -> dict[str, Tensor]:
        a, s = self._path(times.to(x_start.device))
        pred = net(a * x_start + s * noise, times * self.scale, **model_kwargs)[:, : x_start.shape[1]].float()
        mse = (pred - x_start).pow(2).mean(dim=(1, 2, 3))
        return {"loss": mse, "mse": mse}

    def data_fraction(self, times: Tensor) -> Tensor:
        return 1.0 - times.float()

    def sample(self, net: Callable[..., Tensor], noise: Tensor, model_kwargs: Mapping[str, Any], *, sampler: str,
               num_steps: int, generator: torch.Generator | None = None, progress: bool = False, **options: Any) -> Tensor:
        assert sampler in self.samplers
        x = noise
        ts = torch.linspace(0.99, 0.0, num_steps + 1)
        for t, t_next in zip(ts[:-1], ts[1:]):
            t_batch = torch.full((x.shape[0],), float(t), device=x.device)
            x0 = net(x, t_batch * self.scale, **model_kwargs)[:, : x.shape[1]]
            if options.get("clip_denoised"):
                x0 = x0.clamp(-1, 1)
            a, s = self._path(t_batch)
            eps = (x - a * x0) / s
            a_next, s_next = self._path(torch.full_like(t_batch, float(t_next)))
            x = a_next * x0 + s_next * eps
        return x

    def to_record(self) -> dict[str, Any]:
        return {"kind": self.kind, "scale": self.scale}


register_objective(CosineX0.kind, lambda record: CosineX0(scale=float(record["scale"])))


def digits(n: int = 16) -> TensorDataset:
    g = torch.Generator().manual_seed(0)
    return TensorDataset(torch.rand(n, 3, 8, 8, generator=g) * 2 - 1, torch.randint(0, 5, (n,), generator=g))


@pytest.mark.parametrize("family", ["mdtv2", "dit"])
def test_an_outside_objective_trains_with_either_token_rule_and_samples(family: str, tmp_path) -> None:
    model = tiny_mdt(v2=True) if family == "mdtv2" else tiny_dit()
    rule = MaskedTwoPassRule(0.3, 0.2) if family == "mdtv2" else PlainRule()
    criterion = Criterion(CosineX0(), rule, LabelDropout(0.1))
    assert isinstance(criterion.objective, Objective)
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    dist = setup_distributed("cpu")
    try:
        result = train(
            TrainConfig(steps=3, global_batch_size=8, ckpt_every=3, log_every=1, num_workers=0, num_samples=4,
                        sample_cfg_scale=2.0, grad_clip=1.0, ema_decay=0.5),
            model=model, criterion=criterion, dataset=digits(), autoencoder=PixelSpace(3),
            make_optimizer=lambda params: torch.optim.AdamW(params, lr=1e-3), out=tmp_path, dist=dist,
            sampler=("ddim_x0", 3),
        )
    finally:
        dist.close()
    assert result.step == 3
    trained = load_file(str(result.checkpoint / "model.safetensors"))
    assert any(not torch.equal(trained[k], before[k]) for k in trained if k in before)
    assert (tmp_path / "samples" / "0000003.png").is_file()
    logged = (tmp_path / "metrics.jsonl").read_text()
    assert ('"loss_masked"' in logged) == (family == "mdtv2")

    # The run record names every axis, and rebuilds this objective (registered from outside).
    record = {"criterion": criterion.to_record(), "model_config": model.config.to_dict()}
    rebuilt = read_criterion(record)
    assert rebuilt.objective == CosineX0() and rebuilt.tokens == rule and rebuilt.label_dropout == LabelDropout(0.1)

    model.eval()
    labels = torch.tensor([0, 3])
    with torch.no_grad():
        z = sample(model, labels, sampler="ddim_x0", num_steps=4, cfg_scale=2.0, scale_pow=4.0,
                   generator=torch.Generator().manual_seed(0), objective=rebuilt.objective)
    assert z.shape == (2, 3, 8, 8) and torch.isfinite(z).all()
    # A sampler of another family is refused, both ways.
    with pytest.raises(ValueError, match="'ddpm' does not belong to the 'test_cosine_x0' objective"):
        sample(model, labels, sampler="ddpm", num_steps=4, objective=rebuilt.objective)
    with pytest.raises(ValueError, match="'ddim_x0' does not belong to the 'gaussian' objective"):
        sample(model, labels, sampler="ddim_x0", num_steps=4, objective=GaussianObjective())


def test_the_criterion_terms_of_both_rules() -> None:
    """MDT's rule makes two passes (logged apart); the plain rule one; the toy's times reach the network as given."""
    seen: list[Tensor] = []

    def net(x, t, y, ids_keep=None):
        seen.append(t)
        return torch.zeros(x.shape[0], 6, *x.shape[2:]) + 0 * x.sum()

    x, y = torch.randn(4, 3, 8, 8), torch.randint(0, 5, (4,))
    model = tiny_mdt(v2=True).train()
    for rule, names in ((MaskedTwoPassRule(0.3), ("loss", "loss_unmasked", "loss_masked")), (PlainRule(), ("loss",))):
        criterion = Criterion(CosineX0(), rule)
        draws = criterion.draw(model, x, torch.Generator().manual_seed(0))
        terms = criterion(net, x, y, draws)
        assert criterion.logged(terms) == names
        torch.testing.assert_close(terms["loss"], sum(terms[n] for n in names[1:]) if len(names) > 1 else terms["mse"])
    assert all(float(t.min()) >= 10.0 and float(t.max()) <= 990.0 for t in seen)  # 1000 x t, t in [0.01, 0.99]


# --- Sampling it with recipes/sample.py and the pipeline, neither of which knows it ---------------------------------

SEEN: list[dict[str, Any]] = []  # what the toy's samplers were called with


@dataclass(frozen=True)
class CosineX0Sampled(CosineX0):
    """The toy with a declared sampling spec (an option, its own defaults) and a loop over a diffusers scheduler."""

    kind: ClassVar[str] = "test_cosine_x0_sampled"
    samplers: ClassVar[tuple[str, ...]] = ("ddim_x0", "ddim_x0_clipped")
    sampling: ClassVar[SamplingSpec] = SamplingSpec(
        default_sampler="ddim_x0_clipped", default_steps=3, flag_names={"ddim_x0_clipped": "clipped"},
        pipeline_scheduler="ddim_sample",
        options=(
            SamplerOption("x0_clip", float, 1.0, "bound of the clipped x0 estimates (toy runs)", keyword="x0_bound",
                          samplers=("ddim_x0_clipped",),
                          check=lambda v, flags: None if v > 0 else f"--x0-clip must be positive, got {v}"),
        ),
    )

    def sample(self, net: Callable[..., Tensor], noise: Tensor, model_kwargs: Mapping[str, Any], *, sampler: str,
               num_steps: int, generator: torch.Generator | None = None, progress: bool = False, **options: Any) -> Tensor:
        SEEN.append({"sampler": sampler, "num_steps": num_steps, **options})
        bound = options.pop("x0_bound", None)
        clip = self._clipped(net, bound) if bound is not None else net
        return super().sample(clip, noise, model_kwargs, sampler="ddim_x0", num_steps=num_steps, **options)

    @staticmethod
    def _clipped(net: Callable[..., Tensor], bound: float) -> Callable[..., Tensor]:
        return lambda x, t, **kw: net(x, t, **kw).clamp(-bound, bound)

    def diffusers_scheduler(self, kind: str) -> Any:
        from diffusers import DDIMScheduler

        assert kind == "ddim_sample", kind  # the kind the spec declares for pipelines
        return DDIMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", prediction_type="sample",
                             clip_sample=False)

    def check_scheduler(self, scheduler: Any) -> None:
        if getattr(scheduler.config, "prediction_type", None) != "sample":
            raise ValueError(f"the toy objective predicts x0: its scheduler must take prediction_type='sample', got "
                             f"{type(scheduler).__name__}")

    def diffusers_sample(self, scheduler: Any, net: Callable[..., Tensor], noise: Tensor, model_kwargs: Mapping[str, Any],
                         num_steps: int, progress_bar: Callable[[Any], Any] = iter, **step_kwargs: Any) -> Tensor:
        scheduler.set_timesteps(num_steps, device=noise.device)
        x = noise
        for t in progress_bar(scheduler.timesteps):
            toy_time = (t.float() / scheduler.config.num_train_timesteps).expand(x.shape[0])
            x0 = net(x, toy_time * self.scale, **model_kwargs)[:, : x.shape[1]]
            x = scheduler.step(x0, t, x, **step_kwargs).prev_sample
        return x


register_objective(CosineX0Sampled.kind, lambda record: CosineX0Sampled(scale=float(record.get("scale", 1000.0))))


CKPT = "checkpoints/0000001"


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run folder whose config.json records the toy objective (untrained DiT weights: the math is what is tested)."""
    run = tmp_path_factory.mktemp("toy") / "run"
    model = tiny_dit(class_dropout_prob=0.1)
    ckpt = run / CKPT
    model.save_pretrained(ckpt)
    save_file(model.state_dict(), str(ckpt / "ema.safetensors"))
    criterion = Criterion(CosineX0Sampled(), PlainRule(), LabelDropout(0.1))
    write_json(run / "config.json", {"vae": None, "image_size": 8, "criterion": criterion.to_record()})
    return run


def sample_toy(run: Path, out: Path, *flags: str) -> Path:
    return load_recipe("sample").main(["--ckpt", str(run / CKPT), "--num-samples", "2", "--batch-size", "2",
                                       "--device", "cpu", "--no-progress", "--out", str(out), *flags])


def test_sample_recipe_takes_an_outside_objectives_defaults_and_options(toy_run: Path, tmp_path: Path) -> None:
    SEEN.clear()
    made = json.loads((sample_toy(toy_run, tmp_path / "a") / "sample_config.json").read_text())
    # Its default sampler (by its flag name), steps and option, from its spec; the option reaches its sampler.
    assert (made["sampler"], made["steps"], made["x0_clip"]) == ("clipped", 3, 1.0)
    assert made["objective"] == {"kind": CosineX0Sampled.kind, "scale": 1000.0}
    assert SEEN == [{"sampler": "ddim_x0_clipped", "num_steps": 3, "x0_bound": 1.0}]
    SEEN.clear()
    made = json.loads((sample_toy(toy_run, tmp_path / "b", "--x0-clip", "0.25", "--steps", "2", "--cfg-scale", "2")
                       / "sample_config.json").read_text())
    assert made["x0_clip"] == 0.25 and made["settings"]["x0_clip"] == 0.25
    assert SEEN == [{"sampler": "ddim_x0_clipped", "num_steps": 2, "x0_bound": 0.25}]
    SEEN.clear()
    sample_toy(toy_run, tmp_path / "c", "--sampler", "ddim_x0", "--x0-clip", "0.5")
    assert SEEN == [{"sampler": "ddim_x0", "num_steps": 3}]  # an option its sampler does not read is not passed
    # The same command again keeps the finished samples; another option value is another command.
    assert sample_toy(toy_run, tmp_path / "c", "--sampler", "ddim_x0", "--x0-clip", "0.5") == tmp_path / "c"
    with pytest.raises(ValueError, match=r"another command: --x0-clip 0.75 \(recorded: 0.5\)"):
        sample_toy(toy_run, tmp_path / "c", "--sampler", "ddim_x0", "--x0-clip", "0.75")


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--x0-clip", "-1"], "--x0-clip must be positive, got -1.0"),
        (["--sampler", "ddim_x0_clipped"], "--sampler ddim_x0_clipped does not fit .* 'test_cosine_x0_sampled' objective"),
        (["--sampler", "ddpm"], "sampler 'ddpm' does not belong to the 'test_cosine_x0_sampled' objective"),
        (["--time-shift", "2"], "--time-shift apply to runs of the 'flow' objective; .* 'test_cosine_x0_sampled' objective"),
    ],
)
def test_sample_recipe_refuses_what_the_outside_objective_does_not_offer(
    toy_run: Path, tmp_path: Path, flags: list[str], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        sample_toy(toy_run, tmp_path / "s", *flags)
    assert not (tmp_path / "s").exists()


def test_sample_recipe_help_lists_the_runs_objective(toy_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stop:
        load_recipe("sample").main(["--ckpt", str(toy_run / CKPT), "--help"])
    assert stop.value.code == 0
    text = capsys.readouterr().out
    assert "--x0-clip" in text and "--sampler ddim_x0, clipped (default: clipped, 3 steps)" in text
    assert "--time-shift" not in text  # another objective's option
    with pytest.raises(SystemExit) as stop:
        load_recipe("sample").main(["--ckpt", str(toy_run / CKPT), "--no-such-flag"])
    assert stop.value.code == 2


def test_pipeline_samples_an_outside_objective_through_its_own_loop(toy_run: Path, tmp_path: Path) -> None:
    from diffusers import DPMSolverMultistepScheduler

    from mdtblocks import MDTPipeline
    from mdtblocks.pipelines import pipeline_from_checkpoint

    pipe = pipeline_from_checkpoint(toy_run / CKPT)
    assert pipe.config.objective == {"kind": CosineX0Sampled.kind, "scale": 1000.0}
    assert type(pipe.scheduler).__name__ == "DDIMScheduler" and pipe.scheduler.config.prediction_type == "sample"
    noise = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    got = pipe([1, 3], guidance_scale=1.0, num_inference_steps=4, latents=noise, output_type="latent").images
    want = CosineX0Sampled().diffusers_sample(CosineX0Sampled().diffusers_scheduler("ddim_sample"), pipe.transformer,
                                              noise, {"y": torch.tensor([1, 3])}, 4)
    torch.testing.assert_close(got, want)
    pipe.save_pretrained(tmp_path / "pipe")
    again = MDTPipeline.from_pretrained(tmp_path / "pipe")
    torch.testing.assert_close(again([1, 3], guidance_scale=1.0, num_inference_steps=4, latents=noise,
                                     output_type="latent").images, want)
    guided = again([1, 3], guidance_scale=3.0, num_inference_steps=4, latents=noise, output_type="pt").images
    assert guided.shape == (2, 3, 8, 8) and torch.isfinite(guided).all()
    with pytest.raises(ValueError, match="the toy objective predicts x0"):
        MDTPipeline(transformer=pipe.transformer, scheduler=DPMSolverMultistepScheduler(), objective=pipe.config.objective)


def test_a_finished_draw_of_an_earlier_version_is_kept(toy_run: Path, tmp_path: Path) -> None:
    """A record written before an option existed (at its default), or with a flag since dropped, is the same command."""
    out = sample_toy(toy_run, tmp_path / "s")
    made = json.loads((out / "sample_config.json").read_text())
    del made["settings"]["x0_clip"]  # the option came later: the earlier command drew at its default
    made["settings"]["atol"] = 1e-6  # a flag that command had and this one no longer has for this objective
    (out / "sample_config.json").write_text(json.dumps(made))
    before = (out / "samples.npz").read_bytes()
    assert sample_toy(toy_run, tmp_path / "s") == out and (out / "samples.npz").read_bytes() == before
    with pytest.raises(ValueError, match=r"--x0-clip 0.5 \(recorded: None\)"):
        sample_toy(toy_run, tmp_path / "s", "--x0-clip", "0.5")  # not the default: another command
