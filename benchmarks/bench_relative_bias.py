"""Benchmark: building the kept-token relative-position bias, from indices vs. by gathering a repeated full bias.

The naive route materialises the full ``(b, h, n, n)`` bias per sample and gathers rows
then columns (what a straightforward port does in every block); mdtblocks gathers the
``(b, k, k)`` table-row index once per forward and looks the bias up directly.

    python benchmarks/bench_relative_bias.py --batch 32 --grid 16 --heads 16 --keep 0.6
"""

from __future__ import annotations

import argparse
import time

import torch

from mdtblocks.blocks import RelativePositionBias, gather_relative_index


def naive(bias: RelativePositionBias, ids: torch.Tensor) -> torch.Tensor:
    full = bias().expand(ids.shape[0], -1, -1, -1).contiguous()  # (b, h, n, n), one copy per sample
    h, k = full.shape[1], ids.shape[1]
    rows = full.gather(2, ids[:, None, :, None].expand(-1, h, -1, full.shape[-1]))
    return rows.gather(3, ids[:, None, None, :].expand(-1, h, k, -1))


def indexed(bias: RelativePositionBias, ids: torch.Tensor) -> torch.Tensor:
    return bias(gather_relative_index(bias.index, ids))


def timeit(fn, *args, repeats: int = 20) -> float:
    fn(*args)
    start = time.perf_counter()
    for _ in range(repeats):
        out = fn(*args)
        out.sum().backward()
    return (time.perf_counter() - start) / repeats * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--grid", type=int, default=16, help="patch grid side (16 = 256 px with SD-VAE and patch 2)")
    parser.add_argument("--heads", type=int, default=16)
    parser.add_argument("--keep", type=float, default=0.6)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    bias = RelativePositionBias((args.grid, args.grid), args.heads).to(args.device)
    torch.nn.init.normal_(bias.relative_position_bias_table)
    n = args.grid**2
    k = int(n * args.keep)
    g = torch.Generator().manual_seed(0)
    ids = torch.rand(args.batch, n, generator=g).argsort(1)[:, :k].to(args.device)
    assert torch.equal(naive(bias, ids), indexed(bias, ids))
    t_naive, t_indexed = timeit(naive, bias, ids), timeit(indexed, bias, ids)
    full_mb = args.batch * args.heads * n * n * 4 / 2**20
    kept_mb = args.batch * args.heads * k * k * 4 / 2**20
    print(f"device={args.device} b={args.batch} h={args.heads} n={n} k={k}")
    print(f"naive (repeat + 2 gathers): {t_naive:8.2f} ms/iter (fwd+bwd), intermediate {full_mb:.0f} MiB")
    print(f"indexed (mdtblocks):        {t_indexed:8.2f} ms/iter (fwd+bwd), intermediate {kept_mb:.0f} MiB")
    print(f"speed-up: {t_naive / t_indexed:.2f}x")


if __name__ == "__main__":
    main()
