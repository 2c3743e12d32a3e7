"""recipes/extract_latents.py killed (SIGKILL) after its first shards: the same command continues to a cache
identical to an uninterrupted run's; other flags on the part-done folder are refused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from training_utils import load_recipe, save_tiny_vae, start_killed_after

from mdtblocks.data import KLAutoencoder
from mdtblocks.training.recipe import exit_on_bad_input


@pytest.fixture(scope="module")
def tiny_vae(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_vae(tmp_path_factory.mktemp("vae") / "tiny-vae")


def flags(vae: Path, out: Path, *extra: str) -> list[str]:
    # Batches of 12 over shards of 100: most shards end inside a batch, which the resume point must split.
    return ["--out", str(out), "--vae", str(vae), "--image-size", "32", "--batch-size", "12", "--shard-size", "100",
            "--seed", "0", "--device", "cpu", "--num-workers", "0", *extra]


def recorded_shards(out: Path) -> int:
    try:
        return len(json.loads((out / "progress-r00000.json").read_text())["done"])
    except (FileNotFoundError, json.JSONDecodeError):
        return 0


def test_killed_extraction_resumes_to_an_identical_cache(
    tiny_vae: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    recipe = load_recipe("extract_latents")
    killed = tmp_path / "killed"
    start_killed_after("extract_latents", flags(tiny_vae, killed), lambda: recorded_shards(killed) >= 2)
    assert not (killed / "meta.json").exists(), "the extraction finished before the kill; the test needs a slower run"
    done = json.loads((killed / "progress-r00000.json").read_text())["done"]
    assert done and all((killed / s["file"]).is_file() for s in done)

    # Other flags on the part-done folder: refused, naming the flag, before anything is encoded.
    for flag, value in (("--seed", "1"), ("--shard-size", "50"), ("--image-size", "16")):
        argv = flags(tiny_vae, killed)
        argv[argv.index(flag) + 1] = value
        with pytest.raises(ValueError, match=rf"part-done latent extraction started with other flags: {flag} {value} "):
            recipe.main(argv)

    # A half-written temporary file and a damaged newest shard are never taken as complete.
    (killed / ".shard-r00000-00077.npy.abc.tmp").write_bytes(b"half")
    newest = killed / done[-1]["file"]
    newest.write_bytes(newest.read_bytes()[:-64])

    calls = []
    encode = KLAutoencoder.encode
    monkeypatch.setattr(KLAutoencoder, "encode", lambda self, x, generator=None: calls.append(1) or encode(self, x, generator))
    meta = recipe.main(flags(tiny_vae, killed))
    assert 0 < len(calls) < 150  # continued: fewer than the 150 batches of 12 of the 1797 digits
    monkeypatch.undo()

    fresh = tmp_path / "fresh"
    assert recipe.main(flags(tiny_vae, fresh)) == meta
    names = sorted(p.name for p in fresh.iterdir())
    assert sorted(p.name for p in killed.iterdir()) == names  # no progress record, part or temporary file left
    assert meta["num_images"] == 1797 and len(meta["shards"]) == 18
    for name in names:
        if name.endswith(".npy"):
            a, b = np.load(killed / name, allow_pickle=False), np.load(fresh / name, allow_pickle=False)
            assert a.dtype == b.dtype and np.array_equal(a, b), name
            assert (killed / name).read_bytes() == (fresh / name).read_bytes()

    # A finished cache is not extracted again: one error line, exit code 2.
    capsys.readouterr()
    assert exit_on_bad_input(lambda: recipe.main(flags(tiny_vae, fresh))) == 2
    assert f"error: {str(fresh)!r} already holds a latent cache" in capsys.readouterr().err

