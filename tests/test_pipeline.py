"""MDTPipeline: diffusers' pipeline conventions over mdtblocks models, checked against mdtblocks.sample."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    EulerDiscreteScheduler,
    UniPCMultistepScheduler,
)
from PIL import Image

from mdtblocks import MDTPipeline
from mdtblocks.sampling import make_scheduler, sample
from tests.conftest import rel_err
from tests.helpers import tiny_dit, tiny_mdt

SCHEDULERS = [DDPMScheduler, DDIMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler, UniPCMultistepScheduler]
SAME_AS_SAMPLE_TOL = 1e-5  # measured 2e-7 (DDIM and DDPM, 5 steps, guided): fp32 reordering only
MODELS = {"dit": tiny_dit, "mdtv2": tiny_mdt, "mdtv1": lambda: tiny_mdt(v2=False)}


def pipeline(model, scheduler=None, **kwargs):
    pipe = MDTPipeline(transformer=model, scheduler=scheduler or make_scheduler("ddim"), **kwargs)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("arch", sorted(MODELS))
@pytest.mark.parametrize("scheduler_cls", SCHEDULERS, ids=lambda c: c.__name__)
def test_scheduler_swaps_give_finite_images_of_the_right_shape(arch, scheduler_cls):
    pipe = pipeline(MODELS[arch]())
    pipe.scheduler = scheduler_cls.from_config(pipe.scheduler.config)
    assert isinstance(pipe.scheduler, scheduler_cls)
    out = pipe([0, 4], guidance_scale=2.0, num_inference_steps=3, generator=gen(), output_type="latent").images
    assert out.shape == (2, 3, 8, 8) and torch.isfinite(out).all()
    images = pipe([1], num_inference_steps=3, generator=gen(), output_type="pt").images
    assert images.shape == (1, 3, 8, 8) and torch.isfinite(images).all()
    assert 0 <= images.min() and images.max() <= 1


@pytest.mark.parametrize("arch", ["dit", "mdtv2"])
@pytest.mark.parametrize("sampler", ["ddim", "ddpm"])
@pytest.mark.parametrize("scale_pow", [None, 4])
def test_ddim_and_ddpm_give_the_images_of_mdtblocks_sample(arch, sampler, scale_pow):
    model = MODELS[arch]()
    # sample("ddpm", N) respaces to round(linspace(0, 999, N)): diffusers' "linspace" spacing;
    # sample("ddim", N) uses "ddimN": diffusers' default "leading" spacing.
    spacing = {"timestep_spacing": "linspace"} if sampler == "ddpm" else {}
    pipe = pipeline(model, make_scheduler(sampler, **spacing))
    ours = pipe([2, 0, 4], guidance_scale=3.0, guidance_power=scale_pow, num_inference_steps=5,
                generator=gen(1), output_type="latent").images
    g = gen(1)
    noise = torch.randn(3, 3, 8, 8, generator=g)  # the pipeline's first draw; the steps continue on g
    ref = sample(model, torch.tensor([2, 0, 4]), sampler=sampler, num_steps=5, cfg_scale=3.0, scale_pow=scale_pow,
                 noise=noise, generator=g)
    assert rel_err(ours, ref) < SAME_AS_SAMPLE_TOL


def test_power_cosine_guidance_changes_the_images():
    pipe = pipeline(tiny_dit())
    kw = dict(class_labels=[1, 2], guidance_scale=4.0, num_inference_steps=4, output_type="latent")
    constant = pipe(generator=gen(), **kw).images
    cosine = pipe(generator=gen(), guidance_power=1, **kw).images
    unguided = pipe(generator=gen(), **{**kw, "guidance_scale": 1.0}).images
    assert rel_err(cosine, constant) > 1e-3 and rel_err(cosine, unguided) > 1e-3


def test_learned_range_ddpm_reads_the_variance_channels():
    model = tiny_dit()
    kw = dict(class_labels=[3], num_inference_steps=4, output_type="latent")
    learned = pipeline(model, make_scheduler("ddpm"))(generator=gen(), **kw).images
    fixed = pipeline(model, make_scheduler("ddpm", variance_type="fixed_small"))(generator=gen(), **kw).images
    assert rel_err(learned, fixed) > 1e-3


def test_output_types_agree():
    pipe = pipeline(tiny_dit())
    kw = dict(class_labels=[0, 1], guidance_scale=1.5, num_inference_steps=2)
    pt = pipe(generator=gen(), output_type="pt", **kw).images
    arr = pipe(generator=gen(), output_type="np", **kw).images
    pil = pipe(generator=gen(), output_type="pil", return_dict=False, **kw)[0]
    latent = pipe(generator=gen(), output_type="latent", **kw).images
    assert isinstance(arr, np.ndarray) and arr.shape == (2, 8, 8, 3)
    np.testing.assert_allclose(arr, pt.permute(0, 2, 3, 1).numpy())
    torch.testing.assert_close(pt, (latent / 2 + 0.5).clamp(0, 1))  # pixel-space model: no VAE
    assert len(pil) == 2 and all(isinstance(im, Image.Image) and im.size == (8, 8) for im in pil)


def test_same_generator_same_images_and_names_equal_ids():
    pipe = pipeline(tiny_dit(), id2label={0: "zero, nought", 3: "three"})
    assert pipe.get_label_ids(["nought", "three"]) == [0, 3]
    by_name = pipe(["nought", "three"], num_inference_steps=2, generator=gen(5), output_type="latent").images
    by_id = pipe([0, 3], num_inference_steps=2, generator=gen(5), output_type="latent").images
    torch.testing.assert_close(by_name, by_id, rtol=0, atol=0)
    other = pipe([0, 3], num_inference_steps=2, generator=gen(6), output_type="latent").images
    assert rel_err(other, by_id) > 1e-3


@pytest.mark.parametrize("arch", ["dit", "mdtv2"])
def test_pipeline_folder_reloads_into_an_equal_pipeline(arch, tmp_path):
    pipe = pipeline(MODELS[arch](), id2label={1: "one"})
    pipe.scheduler = DPMSolverMultistepScheduler.from_config(pipe.scheduler.config)
    pipe.save_pretrained(tmp_path)
    again = MDTPipeline.from_pretrained(tmp_path)
    again.set_progress_bar_config(disable=True)
    assert type(again.transformer) is type(pipe.transformer) and again.transformer.config == pipe.transformer.config
    assert isinstance(again.scheduler, DPMSolverMultistepScheduler) and again.vae is None
    assert again.labels == {"one": 1} and again.config.prediction_type == "epsilon"
    kw = dict(class_labels=["one", 0], guidance_scale=2.0, num_inference_steps=3, output_type="latent")
    torch.testing.assert_close(again(generator=gen(), **kw).images, pipe(generator=gen(), **kw).images, rtol=0, atol=0)


def test_bad_input_is_refused_clearly():
    pipe = pipeline(tiny_dit(), id2label={0: "zero"})
    with pytest.raises(ValueError, match="unknown label name 'seven'.*zero"):
        pipe(["seven"], num_inference_steps=1)
    with pytest.raises(ValueError, match="class label 5 is out of range.*0..4"):
        pipe([1, 5], num_inference_steps=1)
    with pytest.raises(ValueError, match="class label -1 is out of range"):
        pipe([-1], num_inference_steps=1)
    with pytest.raises(ValueError, match="guidance_scale must be at least 1.*0.5"):
        pipe([1], guidance_scale=0.5, num_inference_steps=1)
    with pytest.raises(ValueError, match="output_type 'jpeg'"):
        pipe([1], num_inference_steps=1, output_type="jpeg")
    with pytest.raises(ValueError, match="num_inference_steps must be a positive int"):
        pipe([1], num_inference_steps=0)
    with pytest.raises(TypeError, match="int or a name, got 1.5|class_labels"):  # own check or the type-check hook
        pipe([1.5], num_inference_steps=1)
    with pytest.raises(ValueError, match="class_labels is empty"):
        pipe([], num_inference_steps=1)
    pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config, prediction_type="v_prediction")
    with pytest.raises(ValueError, match="prediction_type='v_prediction' but the model predicts 'epsilon'"):
        pipe([1], num_inference_steps=1)
    with pytest.raises(ValueError, match="class_dropout_prob=0"):
        pipeline(tiny_dit(class_dropout_prob=0.0))([1], guidance_scale=2.0, num_inference_steps=1)
    with pytest.raises(TypeError, match="transformer"):  # the type-check hook or our own check
        MDTPipeline(transformer=torch.nn.Linear(2, 2), scheduler=make_scheduler("ddim"))


def test_a_v_prediction_model_takes_a_v_scheduler():
    pipe = pipeline(tiny_dit(), make_scheduler("ddim", predict="v"))
    assert pipe.config.prediction_type == "v_prediction"
    pipe.scheduler = UniPCMultistepScheduler.from_config(pipe.scheduler.config)
    assert torch.isfinite(pipe([1], num_inference_steps=2, generator=gen(), output_type="latent").images).all()
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config, prediction_type="epsilon")
    with pytest.raises(ValueError, match="prediction_type='epsilon' but the model predicts 'v_prediction'"):
        pipe([1], num_inference_steps=1)


def test_ode_schedulers_agree_so_euler_noise_is_scaled_by_init_noise_sigma():
    # Euler, DPM-Solver++ and UniPC solve the same probability-flow ODE on the same (linspace)
    # timesteps; Euler only agrees if its start noise is scaled by init_noise_sigma (about 157 here).
    model = tiny_dit()
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(0.5)  # a smoother random model, so 30 steps resolve the ODE
    pipe = pipeline(model)
    kw = dict(class_labels=[1, 2], num_inference_steps=30, output_type="latent")
    results = {}
    for cls in (DPMSolverMultistepScheduler, EulerDiscreteScheduler, UniPCMultistepScheduler):
        pipe.scheduler = cls.from_config(make_scheduler("ddim").config)
        results[cls] = pipe(generator=gen(), **kw).images
    assert EulerDiscreteScheduler.from_config(pipe.scheduler.config).init_noise_sigma > 100
    ref = results.pop(DPMSolverMultistepScheduler)
    for cls, out in results.items():
        assert rel_err(out, ref) < 0.02, (cls.__name__, rel_err(out, ref))  # measured 0.008 for Euler (1st order)


def test_a_run_folder_becomes_a_pipeline_of_its_ema_weights(tmp_path):
    from safetensors.torch import save_file

    from mdtblocks.pipelines import pipeline_from_checkpoint

    raw, ema = tiny_dit(seed=0), tiny_dit(seed=1)
    ckpt = tmp_path / "run" / "checkpoints" / "0000005"
    raw.save_pretrained(ckpt)  # config.json + model.safetensors, as the trainer writes them
    save_file({k: v.contiguous() for k, v in ema.state_dict().items()}, str(ckpt / "ema.safetensors"))
    (ckpt / "state.json").write_text("{}")  # what marks a checkpoint complete
    pipe = pipeline_from_checkpoint(tmp_path / "run", id2label={1: "one"})
    pipe.set_progress_bar_config(disable=True)
    for key, value in ema.state_dict().items():
        assert torch.equal(pipe.transformer.state_dict()[key], value), key
    pipe.save_pretrained(tmp_path / "pipeline")
    again = MDTPipeline.from_pretrained(tmp_path / "pipeline")
    again.set_progress_bar_config(disable=True)
    kw = dict(class_labels=["one"], num_inference_steps=2, output_type="latent")
    torch.testing.assert_close(again(generator=gen(), **kw).images, pipe(generator=gen(), **kw).images, rtol=0, atol=0)
    with pytest.raises(FileNotFoundError, match="no complete checkpoint"):
        (tmp_path / "empty" / "checkpoints").mkdir(parents=True)
        pipeline_from_checkpoint(tmp_path / "empty")
