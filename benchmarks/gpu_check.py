"""The GPU session's one script: kernel equivalence, no host syncs in a step, the non-finite skip, and MDTv2-XL/2 throughput.

Prepared for a lent H100/H200 (one run under 10 minutes); run from the repository root:

    python benchmarks/gpu_check.py --json gpu.json [--official /path/to/MDT] [--stage checks|suite-eager|suite-compile]

1. ``sdpa`` and ``xformers`` (when installed) against the ``math`` path on CUDA: output and
   every gradient of an MDTv2 masked + plain pass, fp32 and bf16.
2. Three training steps (the trainer's ``optimizer_step`` with the real objective, Adan,
   clipping and EMA) under ``torch.cuda.set_sync_debug_mode("error")``: any host-device
   sync inside a step raises.
3. The non-finite guard on the device: a step with a NaN in its batch, under the same sync
   check, with fused AdamW, must leave weights, EMA and optimizer state bit-identical and be
   counted when the counters are read.
4. ``benchmarks/suite.py`` for MDTv2-XL/2, bf16, batch 32, sdpa (and xformers when
   installed), eager and compiled: images/s, FLOP/s against the measured bf16 matmul
   ceiling (MFU), peak memory, and the official model side by side when ``--official`` is
   given.

Each stage can run on its own (``--stage``), so a compile that outlasts a time limit does not
take the other figures with it. ``--device cpu --models MDTv2-S/2 --batch 2`` smoke-tests the
script without a GPU (the sync checks are then skipped).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import suite

from mdtblocks import (
    MaskedDiffusionObjective,
    MaskedDiffusionTransformer,
    create_diffusion,
)
from mdtblocks.training import Adan, make_ema, optimizer_step
from mdtblocks.training.guard import NonFiniteGuard
from mdtblocks.training.precision import AutocastForward
from mdtblocks.training.randomness import draw_step_randomness


def xformers_status(device: torch.device) -> str:
    """``"usable <version>"`` when xformers imports and runs a biased bf16 attention on ``device``, else why not."""
    try:
        import xformers
        import xformers.ops as xops

        q = torch.randn(1, 16, 2, 64, device=device, dtype=torch.bfloat16)
        xops.memory_efficient_attention(q, q, q, attn_bias=torch.zeros(1, 2, 16, 16, device=device, dtype=q.dtype))
        return f"usable {xformers.__version__}"
    except Exception as err:  # noqa: BLE001 - a wheel built for another torch fails in many ways
        return f"not usable: {type(err).__name__}: {str(err)[:300]}"


def backend_equivalence(device: torch.device) -> dict:
    """Every kernel against the ``math`` path: at the same precision, and against fp32 ``math``.

    In bf16 two kernels round differently, so a bf16 kernel is equal to the reference when
    its distance from fp32 ``math`` is no larger than bf16 ``math``'s own.
    """
    out = {}
    status = xformers_status(device)
    backends = ["sdpa", "xformers"] if status.startswith("usable") else ["sdpa"]
    out["xformers"] = status
    results = {}
    for precision in ("fp32", "bf16"):
        for backend in ["math", *backends]:
            try:
                results[backend, precision] = _pass_and_grads(device, backend, precision)
            except Exception as err:  # noqa: BLE001 - report a kernel that fails, keep checking the others
                out[f"{backend}_{precision}"] = f"FAILED: {type(err).__name__}: {err}"
    for (backend, precision), (o, grads) in results.items():
        row = {}
        for ref_name, ref_key in (("vs_math_same_precision", ("math", precision)), ("vs_math_fp32", ("math", "fp32"))):
            if ref_key not in results or ref_key == (backend, precision):
                continue
            ref_out, ref_grads = results[ref_key]
            row[ref_name] = {
                "output_rel_err": float((o - ref_out).norm() / ref_out.norm()),
                "worst_grad_rel_err": max(float((grads[n] - r).norm() / r.norm().clamp_min(1e-30)) for n, r in ref_grads.items()),
            }
        if row:
            out[f"{backend}_{precision}"] = row
    return out


def _pass_and_grads(device: torch.device, backend: str, precision: str) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Output and parameter gradients of a plain + masked MDTv2-S/2 pass with one attention kernel."""
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
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
        y_out = model(x, t, y).float() + 0.5 * model(x, t, y, ids_keep=plan.ids_keep).float()
    y_out.square().mean().backward()
    return y_out.detach(), {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def training_parts(device: torch.device) -> tuple:
    """An MDTv2-S/2 in training mode on ``device``, its EMA, the MDTv2 objective, a bf16 denoiser and a batch of 8."""
    torch.manual_seed(0)
    model = MaskedDiffusionTransformer.from_preset("MDTv2-S/2", input_size=32, num_classes=1000).to(device).train()
    model.check_values = False
    objective = MaskedDiffusionObjective(create_diffusion(snr_gamma=5.0))
    x, y = torch.randn(8, 4, 32, 32, device=device), torch.randint(0, 1000, (8,), device=device)
    return model, make_ema(model), objective, AutocastForward(model, device, "bf16"), x, y


def no_syncs_in_a_step(device: torch.device) -> dict | str:
    model, ema, objective, denoiser, x, y = training_parts(device)
    optimizer = Adan(model.parameters(), lr=1e-4)
    sites: list[str] = []
    for step in range(4):
        randomness = draw_step_randomness(
            model, seed=0, step=step, global_batch=8, sample_shape=(4, 32, 32), num_timesteps=1000, device=device,
            independent_masked_pass=True,
        )
        with sync_recorder(device, enabled=step > 0) as syncs:  # the first step warms up the allocator and cuBLAS
            optimizer_step(denoiser, model, ema, objective, optimizer, x, y, randomness,
                           micro=8, accum=1, grad_clip=1.0, ema_decay=0.9999)
        sites += syncs.sites
    if device.type != "cuda":
        return "not checked (no CUDA)"
    return {"syncs_in_steps_2_to_4": len(sites), "sites": sorted(set(sites))}


class sync_recorder:
    """Record every host-device sync inside the block (``set_sync_debug_mode("warn")``), with where it came from.

    After the block, ``sites`` lists one ``file:line in function`` stack per sync (innermost
    frames last); an empty list means no sync. Nothing is checked on a CPU.
    """

    def __init__(self, device: torch.device, enabled: bool = True) -> None:
        self.on = enabled and device.type == "cuda"
        self.device = device
        self.sites: list[str] = []

    def __enter__(self) -> sync_recorder:  # noqa: PYI034
        if self.on:
            torch.cuda.synchronize(self.device)
            self._caught = warnings.catch_warnings()
            self._caught.__enter__()
            warnings.simplefilter("always")
            warnings.showwarning = self._record
            torch.cuda.set_sync_debug_mode("warn")
        return self

    def _record(self, message, category, filename, lineno, file=None, line=None) -> None:
        if "synchroniz" not in str(message):
            return
        frames = [f for f in traceback.extract_stack()[:-1] if "warnings" not in f.filename]
        self.sites.append(" <- ".join(f"{Path(f.filename).name}:{f.lineno} {f.name}" for f in reversed(frames[-6:])))

    def __exit__(self, *exc: object) -> None:
        if self.on:
            torch.cuda.set_sync_debug_mode(0)
            self._caught.__exit__(None, None, None)


def nonfinite_skip_on_device(device: torch.device) -> dict:
    """A NaN batch on the device: the update is undone with ``torch.where``, without a host sync."""
    model, ema, objective, denoiser, x, y = training_parts(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.type == "cuda")
    guard = NonFiniteGuard(device, max_bad_steps=3)

    def step(number: int, batch: torch.Tensor) -> None:
        randomness = draw_step_randomness(
            model, seed=0, step=number, global_batch=8, sample_shape=(4, 32, 32), num_timesteps=1000, device=device,
            independent_masked_pass=True,
        )
        optimizer_step(denoiser, model, ema, objective, optimizer, batch, y, randomness, micro=8, accum=1,
                       grad_clip=1.0, ema_decay=0.9999, guard=guard, step=number)

    step(1, x)  # creates the optimizer state, so the guard can restore it on the device
    guard.check(1)
    snapshot = [t.detach().clone() for t in [*model.parameters(), *ema.parameters()]]
    snapshot += [v.clone() for s in optimizer.state.values() for v in s.values()]
    bad = x.clone()
    bad[0, 0, 0, 0] = float("nan")
    with sync_recorder(device) as syncs:
        step(2, bad)
    after = [t.detach() for t in [*model.parameters(), *ema.parameters()]]
    after += [v for s in optimizer.state.values() for v in s.values()]
    unchanged = all(torch.equal(a, b) for a, b in zip(snapshot, after))
    counted = guard.check(2)
    step(3, x)  # a finite step after it updates again
    moved = any(not torch.equal(a, b) for a, b in zip(snapshot, [p.detach() for p in model.parameters()]))
    return {"syncs_in_the_nan_step": len(syncs.sites), "sites": sorted(set(syncs.sites)),
            "state_unchanged_after_nan_step": unchanged, "bad_steps_counted": counted, "next_finite_step_updates": moved,
            "restored_on_device": not guard.read_every_step}


def save(report: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=1))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", default="gpu.json")
    p.add_argument("--official", metavar="DIR", help="a sail-sg/MDT checkout for the side-by-side rows")
    p.add_argument("--stage", nargs="+", default=["checks", "suite-eager", "suite-compile"],
                   choices=["checks", "suite-eager", "suite-compile"])
    p.add_argument("--compile", nargs="+", default=["blocks", "on"], help="the suite-compile stage's --compile values")
    p.add_argument("--models", nargs="+", default=["MDTv2-XL/2"])
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--device", default="cuda")
    args = p.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: gpu_check.py needs a CUDA device (or --device cpu for a smoke test)")
    path = Path(args.json)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    report = {"device": name, "torch": torch.__version__, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    report["xformers"] = xformers_status(device)
    backends = ["sdpa", "xformers"] if report["xformers"].startswith("usable") else ["sdpa"]
    if "checks" in args.stage:
        report["equivalence"] = backend_equivalence(device)
        print(json.dumps(report["equivalence"], indent=1), flush=True)
        save(report, path)
        for key, check in (("sync_check", no_syncs_in_a_step), ("nonfinite_skip", nonfinite_skip_on_device)):
            try:
                report[key] = check(device)
            except RuntimeError as err:
                report[key] = f"FAILED: {err}\n{traceback.format_exc()[-3000:]}"
            print(key, report[key], flush=True)
            save(report, path)
    # The throughput rows: fp32 matmuls in TF32, which favours the official fp32 rows (its trainer does not ask for it).
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    stages = (("suite-eager", ["off"], backends), ("suite-compile", args.compile, ["sdpa"]))
    for stage, compiled, stage_backends in stages:
        if stage not in args.stage:
            continue
        suite_args = ["--models", *args.models, "--batch", str(args.batch), "--precision", "bf16", "--backend", *stage_backends,
                      "--compile", *compiled, "--rounds", str(args.rounds), "--warmup", "2", "--device", args.device,
                      "--json", str(path.with_suffix(f".{stage}.json"))]
        if args.official and stage == "suite-eager":
            suite_args += ["--official", args.official]
        print(f"== {stage}", flush=True)
        suite.main(suite_args)


if __name__ == "__main__":
    main()
