"""Benchmark: one MDT training step (plain forward + masked forward + backward), ms/step and peak memory.

Each step runs the two passes of an MDT / MDTv2 training step on random latents: the
unmasked forward and the masked forward (kept tokens from ``model.mask_sampler``), a
simple loss (mean square of both outputs) and its backward. Reports the median time of
``--steps`` steps after ``--warmup`` untimed ones, and the peak memory: on CUDA
``torch.cuda.max_memory_allocated`` over the timed steps, on CPU the growth of the
process's maximum RSS from before the first step (activations, gradients, allocator).

    python benchmarks/bench_train_step.py --model MDTv2-S/2 --input-size 32 --batch 8 --backend sdpa
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time

import torch

from mdtblocks import MaskedDiffusionTransformer


def max_rss_mib() -> float:
    """The process's maximum resident set size so far, in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="MDTv2-S/2", help="preset name (MDT-*/p or MDTv2-*/p)")
    parser.add_argument("--input-size", type=int, default=32, help="latent side (32 = 256 px with SD-VAE)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=10, help="timed steps (the median is reported)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--backend", choices=("sdpa", "math"), default="sdpa", help="attention_backend of the model")
    parser.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: PyTorch's default)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(args.seed)
    model = MaskedDiffusionTransformer.from_preset(
        args.model, input_size=args.input_size, num_classes=1000, attention_backend=args.backend
    ).to(device)
    model.train()
    if model.mask_sampler is None:
        raise SystemExit(f"{args.model} has no mask sampler (mask_ratio is None): not an MDT training step")
    cfg = model.config
    g = torch.Generator().manual_seed(args.seed)
    b, n = args.batch, model.num_tokens
    x = torch.randn(b, cfg.in_channels, args.input_size, args.input_size, generator=g).to(device)
    t = torch.randint(0, 1000, (b,), generator=g).to(device)
    y = torch.randint(0, 1000, (b,), generator=g).to(device)

    def step() -> int:
        plan = model.mask_sampler(b, n, generator=g, device=device)
        out = model(x, t, y)
        out_masked = model(x, t, y, ids_keep=plan.ids_keep)
        loss = out.pow(2).mean() + out_masked.pow(2).mean()
        model.zero_grad(set_to_none=True)
        loss.backward()
        return plan.ids_keep.shape[1]

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    rss_before = max_rss_mib()  # model and inputs built, no step run yet
    for _ in range(args.warmup):
        step()
    sync()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times, kept = [], []
    for _ in range(args.steps):
        start = time.perf_counter()
        kept.append(step())
        sync()
        times.append((time.perf_counter() - start) * 1e3)
    if device.type == "cuda":
        memory = f"peak allocated {torch.cuda.max_memory_allocated(device) / 2**20:.0f} MiB"
    else:
        rss = max_rss_mib()
        memory = f"max RSS +{rss - rss_before:.0f} MiB over the steps (process max RSS {rss:.0f} MiB)"
    params = sum(p.numel() for p in model.parameters()) / 1e6
    print(f"model={args.model} ({params:.1f} M params) backend={args.backend} device={args.device} "
          f"threads={torch.get_num_threads()} dtype=fp32")
    print(f"batch={b} input={args.input_size} tokens={n} kept={min(kept)}-{max(kept)} "
          f"steps={args.steps} (+{args.warmup} warm-up)")
    print(f"train step (fwd + masked fwd + bwd): {statistics.median(times):8.1f} ms/step median "
          f"(min {min(times):.1f}, max {max(times):.1f})")
    print(f"memory: {memory}")


if __name__ == "__main__":
    main()
