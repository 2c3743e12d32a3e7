"""Which MDTv2 pass to align: short runs of the built-in demo with the alignment on the plain or the masked pass.

Each run is ``recipes/mdtv2_imagenet256.py`` on the built-in digits (the demo's model and
flags) for ``--steps`` steps, with ``--align KIND --align-pass plain|masked`` or without
alignment, for each seed. The final EMA weights are then scored on a fixed evaluation: the
plain denoising MSE (epsilon) on every digit at five fixed times with fixed noise, the
same for every run, with no alignment term. Lower is better.

Usage::

    OMP_NUM_THREADS=2 python benchmarks/bench_align_pass.py --steps 300 --seeds 0 1 --align dispersive \\
        --out /tmp/align-pass --json benchmarks/results/align_pass.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from training_utils import load_recipe

from mdtblocks import MaskedDiffusionTransformer
from mdtblocks.data import DigitsDataset
from mdtblocks.objectives import GaussianObjective
from mdtblocks.training import latest_checkpoint

TIMES = (100, 300, 500, 700, 900)


@torch.no_grad()
def score(checkpoint: Path, image_size: int = 16, seed: int = 1234) -> float:
    """Mean plain-pass epsilon MSE of the checkpoint's EMA weights over every digit at :data:`TIMES`."""
    model = MaskedDiffusionTransformer.from_pretrained(checkpoint, "ema.safetensors").eval()
    data = DigitsDataset(image_size=image_size, channels=1, flip=False)
    x = torch.stack([data[i][0] for i in range(len(data))])
    y = torch.tensor([int(data[i][1]) for i in range(len(data))])
    objective = GaussianObjective("linear", 1000, learn_sigma=True)
    g = torch.Generator().manual_seed(seed)
    total = []
    for t in TIMES:
        noise = torch.randn(x.shape, generator=g)
        times = torch.full((len(x),), t, dtype=torch.long)
        for part in torch.split(torch.arange(len(x)), 512):
            terms = objective.losses(model, x[part], times[part], noise[part], {"y": y[part]})
            total.append(terms["mse"])
    return float(torch.cat(total).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--align", default="dispersive", help="dispersive, or repa (with --align-encoder)")
    parser.add_argument("--align-encoder", default=None)
    parser.add_argument("--arms", nargs="+", default=["none", "plain", "masked"])
    parser.add_argument("--out", type=Path, default=Path("/tmp/align-pass"))
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--image-size", type=int, default=16)
    parser.add_argument("--model-flags", default="", help="further recipe flags for every run, e.g. '--depth 4'")
    args = parser.parse_args()
    recipe = load_recipe("mdtv2_imagenet256")
    results: dict[str, list[float]] = {}
    for arm in args.arms:
        for seed in args.seeds:
            out = args.out / f"{arm}-s{seed}"
            flags = ["--out", str(out), "--steps", str(args.steps), "--seed", str(seed), "--num-samples", "0",
                     "--no-pipeline", "--ckpt-every", str(args.steps), "--log-every", "25",
                     "--image-size", str(args.image_size), *args.model_flags.split()]
            if arm != "none":
                flags += ["--align", args.align, "--align-pass", arm]
                if args.align_encoder:
                    flags += ["--align-encoder", args.align_encoder]
            start = time.perf_counter()
            recipe.main(flags)
            value = score(latest_checkpoint(out), args.image_size)
            results.setdefault(arm, []).append(value)
            print(f"{arm} seed {seed}: eval MSE {value:.5f} ({time.perf_counter() - start:.0f}s)", file=sys.stderr, flush=True)
    summary = {
        arm: {"per_seed": v, "mean": statistics.fmean(v), "spread": (max(v) - min(v))} for arm, v in results.items()
    }
    record = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": platform.processor() or platform.machine(),
        "torch": torch.__version__, "steps": args.steps, "seeds": args.seeds, "align": args.align,
        "align_encoder": args.align_encoder, "image_size": args.image_size, "model_flags": args.model_flags, "eval": f"EMA plain-pass eps MSE, all 1797 digits x t in {TIMES}",
        "results": summary,
    }
    print(json.dumps(record, indent=1))
    if args.json:
        args.json.write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
