"""``--objective flow`` end to end: an MDTv2 + flow run on the built-in digits learns, resumes bit-identically,
records its objective, and its samples go through recipes/sample.py and MDTPipeline; bad input is one clear error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from training_utils import load_recipe, max_abs_diff, run_tiny, weights

from mdtblocks import MDTPipeline
from mdtblocks.criterion import read_criterion
from mdtblocks.objectives.flow import FlowMatching, ode_sample

FLOW = ["--objective", "flow", "--flow-time-sampler", "logit_normal", "--flow-logit-mean", "0.2"]


@pytest.fixture(scope="module")
def flow_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """MDTv2 + flow on the TINY config for 60 steps (lr 2e-3), sample grids at 30 and 60, its pipeline at the end."""
    out = tmp_path_factory.mktemp("flow")
    run_tiny(out, 60, *FLOW, "--lr", "2e-3", "--ckpt-every", "30", "--pipeline", "--num-samples", "4")
    return out


def losses(run: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_flow_run_learns_and_records_its_objective(flow_run: Path) -> None:
    loss = losses(flow_run)
    assert len(loss) == 60
    assert sum(loss[-10:]) / 10 < 0.85 * sum(loss[:10]) / 10, loss  # the loss falls
    config = json.loads((flow_run / "config.json").read_text())
    objective = read_criterion(config).objective
    assert objective == FlowMatching(time_sampler="logit_normal", logit_mean=0.2)
    assert config["snr_gamma"] is None  # MDTv2's min-SNR default is Gaussian-only: not recorded for a flow run
    assert len(list((flow_run / "samples").glob("*.png"))) == 2  # the sample grids (Euler ODE) of both checkpoints
    # MDT's masked pass runs with the flow objective (its own draws: both passes are logged).
    assert {"loss_masked", "loss_unmasked"} <= set(json.loads((flow_run / "metrics.jsonl").read_text().splitlines()[0]))


def test_flow_run_resumes_bit_identically(flow_run: Path, tmp_path: Path) -> None:
    straight = tmp_path / "straight"
    run_tiny(straight, 6, *FLOW)
    resumed = tmp_path / "resumed"
    run_tiny(resumed, 3, *FLOW)
    run_tiny(resumed, 6, *FLOW)
    for name in ("model.safetensors", "ema.safetensors"):
        a, b = weights(straight / "checkpoints/0000006", name), weights(resumed / "checkpoints/0000006", name)
        assert max_abs_diff(a, b) == 0.0, name


def test_flow_pipeline_samples_the_euler_ode_in_sit_time(flow_run: Path) -> None:
    pipe = MDTPipeline.from_pretrained(flow_run / "pipeline")
    assert type(pipe.scheduler).__name__ == "FlowMatchEulerDiscreteScheduler"
    assert pipe.config.objective["kind"] == "flow"
    noise = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    got = pipe([0, 1, 2], guidance_scale=1.0, num_inference_steps=6, latents=noise, output_type="latent").images
    # The same ODE by the objective's own Euler sampler on the scheduler's grid in SiT's time t = 1 - sigma.
    objective = FlowMatching(**{k: v for k, v in pipe.config.objective.items() if k != "kind"})
    times = 1 - pipe.scheduler.sigmas.float()
    want = ode_sample(objective.velocity(pipe.transformer), noise, times, method="euler",
                      model_kwargs={"y": torch.tensor([0, 1, 2])})
    assert torch.allclose(got, want, atol=1e-5), (got - want).abs().max()
    images = pipe([3, 4], guidance_scale=2.0, num_inference_steps=4, output_type="pt").images
    assert images.shape == (2, 1, 8, 8) and torch.isfinite(images).all()


def test_flow_pipeline_maps_a_shortened_interval(flow_run: Path) -> None:
    pipe = MDTPipeline.from_pretrained(flow_run / "pipeline")
    objective = FlowMatching(path="GVP", prediction="score")  # samples over [1e-3, 1 - 1e-3]
    pipe = MDTPipeline(transformer=pipe.transformer, scheduler=objective.diffusers_scheduler(), objective=objective.to_record())
    noise = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    got = pipe([0, 1], guidance_scale=1.0, num_inference_steps=5, latents=noise, output_type="latent").images
    t0, t1 = objective.interval(eval=True)
    times = t0 + (t1 - t0) * (1 - pipe.scheduler.sigmas.float())
    want = ode_sample(objective.velocity(pipe.transformer), noise, times, method="euler",
                      model_kwargs={"y": torch.tensor([0, 1])})
    assert torch.allclose(got, want, atol=1e-5), (got - want).abs().max()


def test_sample_recipe_samples_a_flow_run(flow_run: Path, tmp_path: Path) -> None:
    ckpt = str(flow_run / "checkpoints" / "0000060")
    out = load_recipe("sample").main(["--ckpt", ckpt, "--num-samples", "4", "--batch-size", "2", "--steps", "3",
                                      "--cfg-scale", "2", "--guidance-interval", "0.2", "1.0", "--time-shift", "2",
                                      "--device", "cpu", "--no-progress", "--out", str(tmp_path / "s")])
    made = json.loads((out / "sample_config.json").read_text())
    assert made["sampler"] == "sde_euler" and made["objective"]["kind"] == "flow"  # SiT's evaluation by default


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--sampler", "ddim"], "--sampler ddim does not fit .* 'flow' objective"),
        (["--sampler", "rk45"], "--sampler rk45 does not fit"),
        (["--cfg-scale", "2", "--guidance-interval", "0.8", "0.2"], "reversed"),
    ],
)
def test_sample_recipe_refuses_bad_flow_input(flow_run: Path, tmp_path: Path, flags: list[str], message: str) -> None:
    ckpt = str(flow_run / "checkpoints" / "0000060")
    with pytest.raises(ValueError, match=message):
        load_recipe("sample").main(["--ckpt", ckpt, "--num-samples", "2", "--steps", "2", "--device", "cpu",
                                    "--out", str(tmp_path / "s"), *flags])
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize("flags", [["--sampler", "euler"], ["--time-shift", "3"], ["--sampler", "sde_heun"]])
def test_sample_recipe_refuses_flow_samplers_for_a_gaussian_run(tmp_path: Path, flags: list[str]) -> None:
    run_tiny(tmp_path / "g", 1, "--objective", "gaussian")  # the built-in digits default to flow matching
    with pytest.raises(ValueError, match="'gaussian' objective"):
        load_recipe("sample").main(["--ckpt", str(tmp_path / "g/checkpoints/0000001"), "--num-samples", "2",
                                    "--device", "cpu", "--out", str(tmp_path / "s"), *flags])


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--objective", "flow", "--flow-path", "Cosine"], "invalid choice: 'Cosine'"),
        (["--objective", "flow", "--flow-prediction", "x0"], "invalid choice: 'x0'"),
        (["--objective", "flow", "--flow-prediction", "score", "--flow-loss-weight", "snr"], "unknown loss weight 'snr'"),
        (["--objective", "flow", "--flow-cosine-weight", "0.1", "--flow-prediction", "noise"], "needs prediction='velocity'"),
        (["--objective", "gaussian", "--flow-path", "GVP"], "--flow-path apply to --objective flow"),
        (["--objective", "flow", "--snr-gamma", "5"], "no SNR weighting"),
    ],
)
def test_recipe_refuses_bad_objective_flags(tmp_path: Path, capsys, flags: list[str], message: str) -> None:
    with pytest.raises(SystemExit) as stop:
        run_tiny(tmp_path, 1, *flags)
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert pytest.importorskip("re").search(message, err), err
    assert not (tmp_path / "config.json").exists()


def test_pipeline_refuses_a_gaussian_scheduler_for_a_flow_model(flow_run: Path) -> None:
    pipe = MDTPipeline.from_pretrained(flow_run / "pipeline")
    from mdtblocks.sampling import make_scheduler

    with pytest.raises(ValueError, match="trained with flow matching, but its scheduler is DDIMScheduler"):
        MDTPipeline(transformer=pipe.transformer, scheduler=make_scheduler("ddim"), objective=pipe.config.objective)
