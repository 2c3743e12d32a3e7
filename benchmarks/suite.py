"""The benchmark suite: training-step and sampling-step time, peak memory and FLOP/s, per configuration.

For each combination of ``--models``, ``--batch``, ``--precision``, ``--backend`` and
``--compile`` it measures

- the training step: plain pass + masked pass (MDT models) + backward + AdamW update,
  the step of the official trainers, with a mean-square loss of the outputs;
- the sampling step: one classifier-free-guided network evaluation of ``batch`` images
  (a ``2 * batch`` forward, conditional and unconditional), without gradients, measured
  twice: right after each training step, and in a sampling loop (``--loop`` steps in a
  row after an untimed one, as a sampler runs them; configurations take turns loop by loop);
- peak memory of the training step, in a fresh child process per configuration (CPU: the
  growth of the maximum resident set over two steps; CUDA: ``max_memory_allocated``);
- achieved FLOP/s of the training step from :func:`mdtblocks.forward_flops` (a backward
  counted as two forwards, a multiply-add as two operations) against the matrix-multiply
  ceiling that the suite measures itself at the same precision;
- MaskDiT models (``MaskDiT-*``) train with their own step: one pass whose encoder sees the
  kept half of the tokens (the decoder all of them), FLOPs counted for that pass; every row
  also gets its training step's FLOPs and time against the DiT row of the same batch,
  precision, backend and compile mode, when ``--models`` has one;
- with ``--route RATIO``, each configuration once more with TREAD token routing: ``RATIO``
  of the tokens skip the default span (:func:`mdtblocks.masking.route.default_span`) in
  every training pass (sampling is never routed), its FLOPs counted with the route, and its
  training step against the same configuration without routing;
- the ratio against the reference path (``math`` attention, fp32, eager) of the same model
  and, with ``--official DIR`` (a sail-sg/MDT checkout, branch main), against the official
  MDTv2 model run the same way in the same process.

Configurations take turns step by step (``--rounds`` rounds, the median is reported), so
load from other work on the machine falls on all of them alike, and every configuration
(the official model included) keeps the same number of tokens in the masked pass of the
same round. It prints a table and
writes every number to ``--json``.

    python benchmarks/suite.py                                   # MDTv2-S/2, 32x32 latents, batch 8, CPU
    python benchmarks/suite.py --precision fp32 bf16 --backend sdpa math --official ../MDT
    python benchmarks/suite.py --models MDTv2-XL/2 --batch 32 --precision bf16 --device cuda --compile off on
    python benchmarks/suite.py --models DiT-S/2 MDTv2-S/2 --precision fp32 --route 0.5    # with and without routing
    python benchmarks/suite.py --models DiT-S/2 MDTv2-S/2 MaskDiT-S/2 --precision fp32 --route 0.5 --no-memory   # against DiT
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from official_model import load_official_mdtv2

from mdtblocks import MaskedDiffusionTransformer, forward_flops
from mdtblocks.blocks import compile_blocks
from mdtblocks.masking import MaskSampler, mark_kept_dynamic
from mdtblocks.masking.route import Route, default_span
from mdtblocks.models import PRESETS, DiT, MaskDiT
from mdtblocks.sampling import classifier_free_guidance


@dataclass(frozen=True)
class Config:
    """One measured configuration."""

    model: str
    batch: int
    precision: str
    backend: str
    compile: str  # "off", "on" (the whole model) or "blocks" (each transformer block)
    input_size: int
    device: str
    official: str | None = None  # a checkout path: this row runs the official model
    route: float = 0.0  # share of tokens routed past the default span in training (0: no routing)

    @property
    def name(self) -> str:
        if self.official:
            return f"official {self.model} b{self.batch} fp32 eager"
        routed = f" route{self.route:g}" if self.route else ""
        return f"{self.model} b{self.batch} {self.precision} {self.backend}{'' if self.compile == 'off' else ' compile' if self.compile == 'on' else ' compile-blocks'}{routed}"


def build(cfg: Config, seed: int = 0) -> torch.nn.Module:
    """The configuration's model, created directly on its device (an XL model takes ~10 s to initialise on a CPU)."""
    torch.manual_seed(seed)
    with torch.device(cfg.device):
        if cfg.official:
            return load_official_mdtv2(cfg.official, cfg.model, cfg.input_size).to(cfg.device)
        cls = {"DiT": DiT, "MaskDiT": MaskDiT}.get(PRESETS[cfg.model][0], MaskedDiffusionTransformer)
        model = cls.from_preset(cfg.model, input_size=cfg.input_size, num_classes=1000, attention_backend=cfg.backend)
    model.check_values = False  # value checks read tensors back; a benchmark measures the compute
    return model.to(cfg.device)


class Runner:
    """The training and sampling steps of one configuration, ready to call."""

    def __init__(self, cfg: Config, seed: int = 0) -> None:
        self.cfg = cfg
        self.device = torch.device(cfg.device)
        self.model = build(cfg, seed).train()
        # mdtblocks' recipes build AdamW fused; the official scripts use torch's default loop
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=1e-4, fused=cfg.official is None)
        g = torch.Generator().manual_seed(seed)
        c = 4
        self.generator = g
        self.x = torch.randn(cfg.batch, c, cfg.input_size, cfg.input_size, generator=g).to(self.device)
        self.t = torch.randint(0, 1000, (cfg.batch,), generator=g).to(self.device)
        self.y = torch.randint(0, 1000, (cfg.batch,), generator=g).to(self.device)
        self.net = torch.compile(self.model) if cfg.compile == "on" else self.model
        if cfg.compile == "blocks":  # regional compilation: identical blocks share their compiled graphs
            compile_blocks(self.model)
        # MaskDiT's step is one pass with half the tokens dropped; MDT's adds a masked pass to the full one
        self.dropping = isinstance(self.model, MaskDiT)
        self.masked = cfg.official is not None or (getattr(self.model, "mask_sampler", None) is not None and not self.dropping)
        self.route = route_rule(self.model, cfg.route)
        self.route_generator = torch.Generator().manual_seed(seed + 1)  # apart: masks stay paired across rows
        self.kept: list[int] = []
        if cfg.official:
            # The official forward draws its own mask ratio; pair it with ours instead, so that in
            # every round both implementations keep the same number of tokens (the masked pass's
            # cost grows with it: 50-70% kept for MDTv2).
            fields = PRESETS[cfg.model][1]
            self.mask_sampler = MaskSampler(fields["mask_ratio"], fields["mask_ratio_range"])
            self._official_random_masking = self.model.random_masking
            self.model.random_masking = self._paired_random_masking
            self._paired_ratio = 0.0

    def _paired_random_masking(self, x: torch.Tensor, _ratio: torch.Tensor):
        out = self._official_random_masking(x, self._paired_ratio)
        self.kept.append(out[0].shape[1])  # what the official model actually kept
        return out

    def autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.cfg.precision == "bf16")

    def masked_forward(self) -> torch.Tensor:
        if self.cfg.official:
            n = self.model.x_embedder.num_patches
            kept = self.mask_sampler(self.cfg.batch, n, generator=self.generator).num_kept
            self._paired_ratio = 1 - (kept + 0.5) / n  # the official keeps int(n * (1 - ratio)) = kept
            return self.net(self.x, self.t, self.y, enable_mask=True)
        model = self.model
        plan = mark_kept_dynamic(model.mask_sampler(self.cfg.batch, model.num_tokens, generator=self.generator, device=self.device))
        self.kept.append(plan.num_kept)
        return self.net(self.x, self.t, self.y, ids_keep=plan.ids_keep, **self.routing(plan.num_kept))

    def routing(self, kept: int | None = None) -> dict:
        """The ``route=`` argument of one training pass: a fresh draw over the tokens it routes."""
        if self.route is None:
            return {}
        m = self.model.route_tokens(self.route.start, kept)
        return {"route": self.route(self.cfg.batch, m, generator=self.route_generator, device=self.device)}

    def train_step(self) -> None:
        with self.autocast():
            out = self.masked_forward() if self.dropping else self.net(self.x, self.t, self.y, **self.routing())
            loss = out.float().pow(2).mean()
            if self.masked:
                loss = loss + self.masked_forward().float().pow(2).mean()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()

    @torch.no_grad()
    def sample_step(self) -> None:
        self.model.eval()
        x, t = torch.cat([self.x, self.x]), torch.cat([self.t, self.t])
        y = torch.cat([self.y, torch.full_like(self.y, 1000)])
        with self.autocast():
            if self.cfg.official:
                self.model.forward_with_cfg(x, t, y, cfg_scale=4.0)
            else:
                classifier_free_guidance(self.net, 4.0)(x, t, y)
        self.model.train()

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def train_flops(self, kept: int | None) -> float:
        """Floating-point operations of one training step (2 per multiply-add, backward = 2 forwards)."""
        probe = build(Config(**{**asdict(self.cfg), "official": None, "backend": "math", "device": "meta"}))
        if self.dropping:
            return 2 * 3 * forward_flops(probe, kept, route=self.route) * self.cfg.batch
        macs = forward_flops(probe, route=self.route)
        if self.masked and kept is not None:
            macs += forward_flops(probe, kept, route=self.route)
        return 2 * 3 * macs * self.cfg.batch


def route_rule(model: torch.nn.Module, ratio: float) -> Route | None:
    """TREAD routing of ``ratio`` of the tokens over the model's default span (``None`` for ratio 0)."""
    if not ratio:
        return None
    if isinstance(model, (DiT, MaskDiT)):  # MaskDiT: a span in its encoder
        return Route(*default_span(len(model.blocks)), ratio)
    return Route(*default_span(len(model.encoder) + len(model.decoder), len(model.encoder)), ratio)


def timed(fn, runner: Runner) -> float:
    runner.sync()
    start = time.perf_counter()
    fn()
    runner.sync()
    return (time.perf_counter() - start) * 1e3


def matmul_ceiling(device: torch.device, dtype: torch.dtype, size: int | None = None, repeats: int = 5) -> float:
    """Best achieved FLOP/s of a square matrix multiply at ``dtype``: the hardware's practical ceiling.

    The default size is 2048 on a CPU and 8192 on a GPU, where a smaller product is too short
    to outweigh the launch and would understate the ceiling.
    """
    size = size or (8192 if device.type == "cuda" else 2048)
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        a @ b
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def peak_memory_mib(cfg: Config, threads: int, runner: Runner | None = None) -> float:
    """Peak memory of two training steps beyond the model, optimizer and inputs.

    On CUDA it is read in this process from the allocator's statistics (reset around the two
    steps of ``runner``), so a compiled configuration is not compiled a second time; on a CPU,
    where the resident set cannot be attributed to one configuration, in a fresh process.
    """
    if runner is not None and runner.device.type == "cuda":
        return _cuda_step_peak_mib(runner)
    cmd = [sys.executable, __file__, "--child-memory", json.dumps(asdict(cfg)), "--threads", str(threads)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"memory probe of {cfg.name} failed:\n{out.stderr[-2000:]}")
    return float(out.stdout.strip().splitlines()[-1])


def _reset_peak_rss() -> bool:
    """Reset this process's peak resident set (Linux ``clear_refs`` 5); ``ru_maxrss`` survives exec from a big parent."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _peak_rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _cuda_step_peak_mib(runner: Runner) -> float:
    runner.train_step()  # optimizer state exists from here on
    runner.sync()
    torch.cuda.reset_peak_memory_stats(runner.device)
    base = torch.cuda.memory_allocated(runner.device)
    for _ in range(2):
        runner.train_step()
    runner.sync()
    return (torch.cuda.max_memory_allocated(runner.device) - base) / 2**20


def child_memory(cfg: Config) -> None:
    runner = Runner(cfg)
    if runner.device.type == "cuda":
        print(_cuda_step_peak_mib(runner))
        return
    if not _reset_peak_rss():
        raise RuntimeError("cannot reset the peak RSS (/proc/self/clear_refs): memory probes need Linux")
    before = _peak_rss_mib()  # model, optimizer and inputs built, no step run yet
    for _ in range(2):
        runner.train_step()
    print(_peak_rss_mib() - before)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["MDTv2-S/2"], choices=sorted(PRESETS), metavar="PRESET")
    p.add_argument("--batch", nargs="+", type=int, default=[8])
    p.add_argument("--precision", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    p.add_argument("--backend", nargs="+", default=["sdpa"], choices=["sdpa", "math", "xformers"])
    p.add_argument("--compile", nargs="+", default=["off"], choices=["off", "on", "blocks"],
                   help="off, on (torch.compile of the model) or blocks (of each transformer block: much shorter compile)")
    p.add_argument("--input-size", type=int, default=32, help="latent side (32 = 256 px through the SD VAE)")
    p.add_argument("--rounds", type=int, default=5, help="timed rounds (each configuration once per round)")
    p.add_argument("--warmup", type=int, default=1, help="untimed rounds first (compile happens here)")
    p.add_argument("--loop", type=int, default=2, help="timed sampling steps in a row per configuration and round of the sampling loop (0: none)")
    p.add_argument("--route", type=float, default=0.0, metavar="RATIO",
                   help="also run every configuration with this share of tokens routed past the default span (TREAD)")
    p.add_argument("--official", metavar="DIR", help="a sail-sg/MDT checkout (branch main): add the official MDTv2")
    p.add_argument("--no-memory", action="store_true", help="skip the per-configuration memory probes")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: PyTorch's default)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--json", default="benchmark.json", help="where to write every number")
    p.add_argument("--child-memory", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    if args.child_memory:
        child_memory(Config(**json.loads(args.child_memory)))
        return
    if args.rounds < 1 or args.warmup < 0 or args.loop < 0 or any(b < 1 for b in args.batch):
        p.error(f"--rounds {args.rounds}, --warmup {args.warmup}, --loop {args.loop} and --batch {args.batch} must be positive")
    if not 0.0 <= args.route < 1.0:
        p.error(f"--route {args.route} is outside [0, 1): the share of tokens that skip the span")

    configs = [
        Config(m, b, prec, backend, comp, args.input_size, args.device)
        for m, b, prec, backend, comp in itertools.product(args.models, args.batch, args.precision, args.backend, args.compile)
    ]
    if args.route:
        configs = [r for c in configs for r in (c, Config(**{**asdict(c), "route": args.route}))]
    references = {c.model + str(c.batch): Config(c.model, c.batch, "fp32", "math", "off", args.input_size, args.device) for c in configs}
    officials = {}
    if args.official:
        for c in configs:
            if c.model.startswith("MDTv2"):
                officials[c.model + str(c.batch)] = Config(c.model, c.batch, "fp32", "math", "off", args.input_size, args.device, args.official)
    everything = list(dict.fromkeys([*configs, *references.values(), *officials.values()]))
    device = torch.device(args.device)
    runners = {c: Runner(c) for c in everything}
    results = {c: {"train_ms": [], "sample_ms": []} for c in everything}
    for r in range(args.warmup + args.rounds):
        for c, runner in runners.items():
            train, sample = timed(runner.train_step, runner), timed(runner.sample_step, runner)
            if r == 0:  # the first step and sampling step include compilation
                results[c]["first_ms"] = train + sample
            if r >= args.warmup:
                results[c]["train_ms"].append(train)
                results[c]["sample_ms"].append(sample)
    for _ in range(args.rounds if args.loop else 0):  # the sampling loop: an untimed step, then --loop timed ones
        for c, runner in runners.items():
            runner.sample_step()
            results[c].setdefault("loop_ms", []).extend(timed(runner.sample_step, runner) for _ in range(args.loop))
    ceilings = {prec: matmul_ceiling(device, torch.float32 if prec == "fp32" else torch.bfloat16) for prec in ("fp32", "bf16")}

    rows = []
    for c in everything:
        runner, res = runners[c], results[c]
        train_ms, sample_ms = statistics.median(res["train_ms"]), statistics.median(res["sample_ms"])
        kept = statistics.median(runner.kept) if runner.kept else None
        flops = runner.train_flops(int(kept) if kept else None)
        row = {
            **asdict(c), "name": c.name, "train_ms": train_ms, "sample_ms": sample_ms,
            "train_ms_all": res["train_ms"], "sample_ms_all": res["sample_ms"], "first_round_ms": res["first_ms"],
            "kept_all": runner.kept,
            "images_per_s": c.batch / train_ms * 1e3, "train_tflops": flops / train_ms / 1e9,
            "ceiling_tflops": ceilings[c.precision] / 1e12,
        }
        row["fraction_of_ceiling"] = row["train_tflops"] / row["ceiling_tflops"]
        row["train_gflop"] = flops / 1e9
        ref = results[references[c.model + str(c.batch)]]
        row["speedup_vs_math"] = statistics.median(ref["train_ms"]) / train_ms
        row["sample_speedup_vs_math"] = statistics.median(ref["sample_ms"]) / sample_ms
        if args.loop:
            row["loop_sample_ms"] = statistics.median(res["loop_ms"])
            row["loop_sample_ms_all"] = res["loop_ms"]
            row["loop_sample_speedup_vs_math"] = statistics.median(ref["loop_ms"]) / row["loop_sample_ms"]
        off = officials.get(c.model + str(c.batch))
        if off is not None:
            row["speedup_vs_official"] = statistics.median(results[off]["train_ms"]) / train_ms
            row["sample_speedup_vs_official"] = statistics.median(results[off]["sample_ms"]) / sample_ms
            if args.loop:
                row["loop_sample_speedup_vs_official"] = statistics.median(results[off]["loop_ms"]) / row["loop_sample_ms"]
            # the same ratios round by round (configurations take turns, so a slow spell of the
            # machine falls on both sides of each ratio), then their median
            for key, series in (("train", "train_ms"), ("sample", "sample_ms"), ("loop_sample", "loop_ms")):
                if series in res:
                    row[f"{key}_speedup_vs_official_paired"] = statistics.median(
                        o / m for o, m in zip(results[off][series], res[series], strict=True))
        if c.route:
            unrouted = results[Config(**{**asdict(c), "route": 0.0})]
            row["train_speedup_vs_unrouted"] = statistics.median(unrouted["train_ms"]) / train_ms
        if not args.no_memory:
            row["peak_mib"] = peak_memory_mib(c, args.threads, runner)
        rows.append(row)
    for row in rows:  # per-step cost against the unrouted DiT of the same batch, precision, backend and compile mode
        dit = next((r for r in rows if PRESETS[r["model"]][0] == "DiT" and not r["route"] and not r["official"]
                    and all(r[k] == row[k] for k in ("batch", "precision", "backend", "compile"))), None)
        if dit is not None:
            row["train_ms_vs_dit"] = row["train_ms"] / dit["train_ms"]
            row["train_flop_vs_dit"] = row["train_gflop"] / dit["train_gflop"]
    if not args.no_memory:
        for row in rows:
            off = officials.get(row["model"] + str(row["batch"]))
            if off is not None:
                off_mib = next(r["peak_mib"] for r in rows if r["name"] == off.name)
                row["memory_vs_official"] = row["peak_mib"] / off_mib if off_mib > 0 else float("nan")

    machine = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({os.cpu_count()} cores)",
        "threads": torch.get_num_threads(), "torch": torch.__version__, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "ceiling_tflops": {k: v / 1e12 for k, v in ceilings.items()},
    }
    Path(args.json).write_text(json.dumps({"machine": machine, "rows": rows}, indent=1))
    print(f"{machine['device']}, {machine['threads']} threads, torch {machine['torch']}, {machine['date']}; "
          f"matmul ceiling fp32 {ceilings['fp32'] / 1e9:.0f} GFLOP/s, bf16 {ceilings['bf16'] / 1e9:.0f} GFLOP/s")
    nan = float("nan")
    head = (f"{'configuration':44s} {'1st round s':>11s} {'train ms':>9s} {'img/s':>7s} {'sample ms':>9s} {'loop ms':>8s} {'GFLOP/s':>8s} "
            f"{'% ceil':>6s} {'peak MiB':>8s} {'vs math':>7s} {'vs official':>11s} {'sample vs off':>13s} {'loop vs off':>11s} {'mem vs off':>10s}")
    print(head)
    for row in rows:
        print(
            f"{row['name']:44s} {row['first_round_ms'] / 1e3:11.1f} {row['train_ms']:9.1f} {row['images_per_s']:7.2f} {row['sample_ms']:9.1f} "
            f"{row.get('loop_sample_ms', nan):8.1f} {row['train_tflops'] * 1e3:8.1f} {100 * row['fraction_of_ceiling']:6.1f} "
            f"{row.get('peak_mib', nan):8.0f} {row['speedup_vs_math']:6.2f}x {row.get('speedup_vs_official', nan):10.2f}x "
            f"{row.get('sample_speedup_vs_official', nan):12.2f}x {row.get('loop_sample_speedup_vs_official', nan):10.2f}x "
            f"{row.get('memory_vs_official', nan):9.2f}x"
        )
    for row in rows:
        if "train_speedup_vs_official_paired" in row and not row["official"]:
            paired = ", ".join(f"{k} {row[f'{k}_speedup_vs_official_paired']:.2f}x" for k in ("train", "sample", "loop_sample")
                               if f"{k}_speedup_vs_official_paired" in row)
            print(f"{row['name']:44s} vs official, median of the per-round ratios: {paired}")
    for row in rows:
        if "train_ms_vs_dit" in row:
            print(f"{row['name']:44s} training step: {row['train_gflop']:.1f} GFLOP, {row['train_flop_vs_dit']:.2f}x DiT's FLOPs, "
                  f"{row['train_ms_vs_dit']:.2f}x DiT's time")
    for row in rows:
        if "train_speedup_vs_unrouted" in row:
            print(f"{row['name']:44s} training step {row['train_speedup_vs_unrouted']:.2f}x the unrouted one's speed")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
