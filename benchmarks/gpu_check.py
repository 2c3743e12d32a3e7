"""The GPU session's one script: kernel equivalence, no host syncs in a step, and MDTv2-XL/2 throughput.

Prepared for a lent H100/H200 (one run under 10 minutes); run from the repository root:

    python benchmarks/gpu_check.py --json gpu.json [--official /path/to/MDT]

1. ``sdpa`` and ``xformers`` (when installed) against the ``math`` path on CUDA: output and
   every gradient of an MDTv2 masked + plain pass, fp32 and bf16.
2. Three training steps (the trainer's ``optimizer_step`` with the real objective, Adan,
   clipping and EMA) under ``torch.cuda.set_sync_debug_mode("error")``: any host-device
   sync inside a step raises.
3. ``benchmarks/suite.py`` for MDTv2-XL/2, bf16, batch 32, sdpa, eager and compiled:
   images/s, FLOP/s against the measured bf16 matmul ceiling (MFU), peak memory, and the
   official model side by side when ``--official`` is given.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import suite  # noqa: E402

from mdtblocks import MaskedDiffusionObjective, MaskedDiffusionTransformer, create_diffusion  # noqa: E402
from mdtblocks.training import Adan, make_ema, optimizer_step  # noqa: E402
from mdtblocks.training.precision import AutocastForward  # noqa: E402
from mdtblocks.training.randomness import draw_step_randomness  # noqa: E402


def backend_equivalence(device: torch.device) -> dict:
    out = {}
    backends = ["sdpa"]
    try:
        import xformers.ops  # noqa: F401

        backends.append("xformers")
    except ImportError:
        out["xformers"] = "not installed"
    for precision in ("fp32", "bf16"):
        results = {}
        for backend in ["math", *backends]:
            torch.manual_seed(0)
            model = MaskedDiffusionTransformer.from_preset(
                "MDTv2-S/2", input_size=32, num_classes=1000, attention_backend=backend
            ).to(device).train()
            model.check_values = False
            for p in model.parameters():  # adaLN-Zero makes blocks the identity at init: randomize
                torch.nn.init.normal_(p, std=0.02)
            g = torch.Generator().manual_seed(1)
            x = torch.randn(4, 4, 32, 32, generator=g).to(device)
            t, y = torch.tensor([1, 250, 500, 999], device=device), torch.tensor([0, 1, 2, 1000], device=device)
            plan = model.mask_sampler(4, model.num_tokens, generator=g, device=device)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=precision == "bf16"):
                y_out = model(x, t, y).float() + 0.5 * model(x, t, y, ids_keep=plan.ids_keep).float()
            y_out.square().mean().backward()
            results[backend] = (y_out.detach(), {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None})
        ref_out, ref_grads = results["math"]
        for backend in backends:
            o, grads = results[backend]
            worst_grad = max(float((grads[n] - r).norm() / r.norm().clamp_min(1e-30)) for n, r in ref_grads.items())
            out[f"{backend}_{precision}"] = {
                "output_rel_err": float((o - ref_out).norm() / ref_out.norm()), "worst_grad_rel_err": worst_grad,
            }
    return out


def no_syncs_in_a_step(device: torch.device) -> str:
    torch.manual_seed(0)
    model = MaskedDiffusionTransformer.from_preset("MDTv2-S/2", input_size=32, num_classes=1000).to(device).train()
    model.check_values = False
    ema = make_ema(model)
    objective = MaskedDiffusionObjective(create_diffusion(snr_gamma=5.0))
    optimizer = Adan(model.parameters(), lr=1e-4)
    denoiser = AutocastForward(model, device, "bf16")
    x, y = torch.randn(8, 4, 32, 32, device=device), torch.randint(0, 1000, (8,), device=device)
    for step in range(4):
        randomness = draw_step_randomness(
            model, seed=0, step=step, global_batch=8, sample_shape=(4, 32, 32), num_timesteps=1000, device=device,
            independent_masked_pass=True,
        )
        torch.cuda.synchronize(device)
        if step > 0:  # the first step warms up the allocator and cuBLAS (they may sync once)
            torch.cuda.set_sync_debug_mode("error")
        try:
            optimizer_step(denoiser, model, ema, objective, optimizer, x, y, randomness,
                           micro=8, accum=1, grad_clip=1.0, ema_decay=0.9999)
        finally:
            torch.cuda.set_sync_debug_mode(0)
    return "no host-device sync in steps 2-4"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", default="gpu.json")
    p.add_argument("--official", metavar="DIR", help="a sail-sg/MDT checkout for the side-by-side rows")
    p.add_argument("--batch", type=int, default=32)
    args = p.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("error: gpu_check.py needs a CUDA device")
    device = torch.device("cuda")
    torch.backends.cuda.matmul.allow_tf32 = True
    report = {"device": torch.cuda.get_device_name(device), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    report["equivalence"] = backend_equivalence(device)
    print(json.dumps(report["equivalence"], indent=1), flush=True)
    try:
        report["sync_check"] = no_syncs_in_a_step(device)
    except RuntimeError as err:  # the sync debug mode raises at the syncing call
        report["sync_check"] = f"FAILED: {err}"
    print(report["sync_check"], flush=True)
    Path(args.json).write_text(json.dumps(report, indent=1))
    suite_args = ["--models", "MDTv2-XL/2", "--batch", str(args.batch), "--precision", "bf16", "--backend", "sdpa",
                  "--compile", "off", "on", "--rounds", "5", "--device", "cuda", "--json", str(Path(args.json).with_suffix(".suite.json"))]
    if args.official:
        suite_args += ["--official", args.official]
    suite.main(suite_args)


if __name__ == "__main__":
    main()
