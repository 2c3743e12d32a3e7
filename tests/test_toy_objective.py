"""A new objective written outside the package, against the public interface only: x0-prediction on a cosine path.

It trains three steps through :func:`mdtblocks.training.train` with MDTv2's two-pass
token rule and with DiT's plain rule, is recorded in the run's criterion record and
rebuilt from it, and samples (with guidance) through :func:`mdtblocks.sampling.sample`.
No module of ``mdtblocks`` knows it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import pytest
import torch
from helpers import tiny_dit, tiny_mdt
from safetensors.torch import load_file
from torch import Tensor
from torch.utils.data import TensorDataset

from mdtblocks.criterion import Criterion, LabelDropout, read_criterion
from mdtblocks.data import PixelSpace
from mdtblocks.objectives import GaussianObjective, Objective, register_objective
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
