"""mdtblocks.evaluation.study_folder: resuming a study with other arms or seeds, and merging study folders."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mdtblocks.evaluation.study_folder import load_results, merge_study
from mdtblocks.folderlock import FolderInUse, FolderLock

FIELDS = {"arms": ["DiT", "SiT"], "seeds": [0, 1], "lr": 0.002, "steps": 8}


def records(n: int, fd: float) -> list[dict]:
    return [{"step": 4 * (i + 1), "fd": fd + i} for i in range(n)]


def make_study(out: Path, runs: dict, fields: dict = FIELDS, classifier: bytes = b"weights") -> Path:
    """A study folder as the recipe leaves it: results, one checkpoint file and grid per run, the classifier."""
    (out / "classifier").mkdir(parents=True)
    (out / "classifier" / "classifier.safetensors").write_bytes(classifier)
    for name, run in runs.items():
        for seed, recs in run["seeds"].items():
            for folder in ("runs", "samples"):
                (out / folder / f"{name}-seed{seed}").mkdir(parents=True)
                (out / folder / f"{name}-seed{seed}" / "mark").write_text(f"{out.name} {len(recs)}")
    (out / "results.json").write_text(json.dumps({"config": fields, "runs": runs}))
    return out


def arm(step_flops: int = 100, **seeds: list) -> dict:
    return {"params": 10, "step_flops": step_flops, "seeds": {k.removeprefix("s"): v for k, v in seeds.items()}}


def test_other_arms_and_seeds_resume_the_folder_but_other_settings_are_refused(tmp_path) -> None:
    make_study(tmp_path, {"DiT": arm(s0=records(2, 1.0))})
    results = load_results(tmp_path / "results.json", {**FIELDS, "arms": ["DiT", "MDTv2"], "seeds": [0, 1, 2]})
    assert results["runs"]["DiT"]["seeds"]["0"] == records(2, 1.0)  # kept, and summarised when asked for
    assert results["config"]["seeds"] == [0, 1, 2]
    with pytest.raises(ValueError, match=r"holds a study with other settings \(lr, steps\); use another --out"):
        load_results(tmp_path / "results.json", {**FIELDS, "lr": 0.01, "steps": 9})
    assert load_results(tmp_path / "new.json", FIELDS) == {"config": FIELDS, "runs": {}}


def test_merge_takes_missing_and_longer_runs_with_their_folders(tmp_path) -> None:
    a = make_study(tmp_path / "a", {"DiT": arm(s0=records(2, 1.0), s1=records(1, 5.0)), "SiT": arm(s0=records(2, 3.0))})
    b = make_study(tmp_path / "b", {
        "DiT": arm(s0=records(1, 9.0), s1=records(2, 5.0), s2=records(2, 7.0)),  # shorter, longer, missing
        "SiT": arm(s0=records(2, 8.0)),  # as long: ours is kept
        "MDTv2": arm(step_flops=170, s2=records(2, 2.0)),  # a whole arm
    })
    results = load_results(a / "results.json", FIELDS)
    taken = merge_study(a, b, results)
    assert taken == ["DiT seed 1 (2 evaluations)", "DiT seed 2 (2 evaluations)", "MDTv2 seed 2 (2 evaluations)"]
    runs = results["runs"]
    assert runs["DiT"]["seeds"] == {"0": records(2, 1.0), "1": records(2, 5.0), "2": records(2, 7.0)}
    assert runs["SiT"]["seeds"]["0"] == records(2, 3.0)
    assert runs["MDTv2"] == arm(step_flops=170, s2=records(2, 2.0))
    for folder in ("runs", "samples"):  # each taken run's checkpoints and grids came with it, replacing ours
        assert (a / folder / "DiT-seed0" / "mark").read_text() == "a 2"
        assert (a / folder / "DiT-seed1" / "mark").read_text() == "b 2"
        assert (a / folder / "DiT-seed2" / "mark").read_text() == "b 2"
        assert (a / folder / "SiT-seed0" / "mark").read_text() == "a 2"
        assert sorted(p.name for p in (a / folder).iterdir()) == ["DiT-seed0", "DiT-seed1", "DiT-seed2", "MDTv2-seed2", "SiT-seed0"]
    assert merge_study(a, b, results) == []  # merging again takes nothing


def test_merge_into_a_new_folder_takes_the_classifier(tmp_path) -> None:
    b = make_study(tmp_path / "b", {"DiT": arm(s2=records(2, 7.0))}, classifier=b"theirs")
    results = load_results(tmp_path / "a" / "results.json", FIELDS)
    assert merge_study(tmp_path / "a", b, results) == ["DiT seed 2 (2 evaluations)"]
    assert (tmp_path / "a" / "classifier" / "classifier.safetensors").read_bytes() == b"theirs"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("settings", r"holds a study with other settings \(lr\); only studies with the same flags merge"),
        ("classifier", "its samples were scored by another domain classifier"),
        ("flops", "arm DiT has step_flops 101 there and 100 here; the two folders were run by different versions"),
        ("empty", "no study there"),
        ("self", "that is the --out folder itself"),
    ],
)
def test_merge_refuses_what_cannot_be_one_study(tmp_path, change, message) -> None:
    a = make_study(tmp_path / "a", {"DiT": arm(s0=records(2, 1.0))})
    fields = {**FIELDS, "lr": 0.01} if change == "settings" else FIELDS
    b = make_study(
        tmp_path / "b", {"DiT": arm(step_flops=101 if change == "flops" else 100, s1=records(2, 1.0))},
        fields=fields, classifier=b"other" if change == "classifier" else b"weights",
    )
    if change == "empty":
        (b / "results.json").unlink()
    source = a if change == "self" else b
    results = load_results(a / "results.json", FIELDS)
    before = json.loads(json.dumps(results))
    with pytest.raises(ValueError, match=message) as err:
        merge_study(a, source, results)
    assert str(source) in str(err.value)
    assert results == before and not (a / "runs" / "DiT-seed1").exists()


def test_merge_refuses_a_folder_whose_study_still_runs(tmp_path) -> None:
    a = make_study(tmp_path / "a", {})
    b = make_study(tmp_path / "b", {"DiT": arm(s2=records(2, 7.0))})
    with FolderLock(b), pytest.raises(FolderInUse, match="in use by another run"):  # the study running there holds it
        merge_study(a, b, load_results(a / "results.json", FIELDS))
    assert not (a / "runs").exists()
