"""mdtblocks.evaluation.study_jobs: a study's runs in part folders and child processes, taken back as they finish."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest
from test_study_folder import FIELDS, arm, make_study, records

from mdtblocks.evaluation.study_jobs import PartFailed, leftover_parts, part_folder, prepare_part, run_parts, take_back
from mdtblocks.evaluation.study_folder import load_results
from mdtblocks.folderlock import FolderInUse, FolderLock


def test_a_part_carries_the_run_and_comes_back_with_its_progress(tmp_path) -> None:
    out = make_study(tmp_path / "out", {"DiT": arm(s0=records(1, 1.0)), "SiT": arm(s0=records(2, 3.0))})
    (out / "targets").mkdir()
    (out / "targets" / "a.safetensors").write_bytes(b"maps")
    results = load_results(out / "results.json", FIELDS)
    part = prepare_part(out, "DiT", 0, results)
    assert part == part_folder(out, "DiT", 0) and leftover_parts(out) == [part]
    mine = json.loads((part / "results.json").read_text())
    assert mine["runs"] == {"DiT": arm(s0=records(1, 1.0))} and mine["config"]["arms"] == ["DiT"]
    assert (part / "runs" / "DiT-seed0" / "mark").read_text() == "out 1"  # its checkpoints, to resume from
    assert (part / "classifier" / "classifier.safetensors").read_bytes() == b"weights"
    assert (part / "targets" / "a.safetensors").read_bytes() == b"maps"

    # The child trains one more evaluation and caches new targets; an existing part is kept as it is.
    mine["runs"]["DiT"]["seeds"]["0"] = records(2, 1.0)
    (part / "results.json").write_text(json.dumps(mine))
    (part / "runs" / "DiT-seed0" / "mark").write_text("part 2")
    (part / "targets" / "b.safetensors").write_bytes(b"new maps")
    assert prepare_part(out, "DiT", 0, results) == part
    assert (part / "runs" / "DiT-seed0" / "mark").read_text() == "part 2"

    assert take_back(out, part, results) == ["DiT seed 0 (2 evaluations)"]
    assert not part.exists() and not (out / "parts").exists()  # nor an empty parts folder
    on_disk = json.loads((out / "results.json").read_text())
    assert on_disk["runs"]["DiT"]["seeds"]["0"] == records(2, 1.0) == results["runs"]["DiT"]["seeds"]["0"]
    assert on_disk["runs"]["SiT"] == arm(s0=records(2, 3.0))  # other runs untouched
    assert (out / "runs" / "DiT-seed0" / "mark").read_text() == "part 2"
    assert (out / "targets" / "b.safetensors").read_bytes() == b"new maps"


def test_a_part_behind_the_folder_is_dropped_and_a_busy_or_foreign_one_refused(tmp_path) -> None:
    out = make_study(tmp_path / "out", {"DiT": arm(s0=records(1, 1.0))})
    results = load_results(out / "results.json", FIELDS)
    part = prepare_part(out, "DiT", 0, results)
    results["runs"]["DiT"]["seeds"]["0"] = records(2, 9.0)  # since merged in from elsewhere: ours is newer
    assert take_back(out, part, results) == [] and not part.exists()
    assert results["runs"]["DiT"]["seeds"]["0"] == records(2, 9.0)

    part = prepare_part(out, "DiT", 1, results)
    with FolderLock(part), pytest.raises(FolderInUse):
        take_back(out, part, results)  # a process still trains there
    other = json.loads((part / "results.json").read_text())
    other["config"]["lr"] = 0.5
    (part / "results.json").write_text(json.dumps(other))
    with pytest.raises(ValueError, match=r"other settings \(lr\)"):
        take_back(out, part, results)
    assert part.exists()


def _python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def test_run_parts_runs_each_part_at_most_jobs_at_once(tmp_path, capsys) -> None:
    runs = [("A", 0), ("B", 0), ("A", 1)]
    code = ("import os, sys, time; open(sys.argv[1] + '/start', 'w').write(str(time.time())); time.sleep(0.5); "
            "print(os.environ['OMP_NUM_THREADS']); print('10%|#  | 1/8\\r', end=''); "
            "print('00:00 ' + os.path.basename(sys.argv[1]) + ' seed 0, step 4/8: fd 1.0', flush=True); "
            "open(sys.argv[1] + '/end', 'w').write(str(time.time()))")

    def part_of(name: str, seed: int) -> Path:
        (tmp_path / f"{name}{seed}").mkdir()
        return tmp_path / f"{name}{seed}"

    done = []
    assert run_parts(runs, lambda n, s, p: [*_python(code), str(p)], part_of, 2, 3, lambda n, s, p: done.append((n, s))) is None
    assert sorted(done) == sorted(runs)
    spans = [tuple(float((tmp_path / f"{n}{s}" / f).read_text()) for f in ("start", "end")) for n, s in runs]
    assert max(sum(a <= t < b for a, b in spans) for t, _ in spans) == 2  # two at once, never three
    assert (tmp_path / "A0" / "study.log").read_text().splitlines()[0] == "3"  # each with the threads it was given
    err = capsys.readouterr().err  # the evaluation lines are passed on, the rest stays in the parts' logs
    assert sorted(line for line in err.splitlines() if "seed 0, step" in line) == [
        f"00:00 {part} seed 0, step 4/8: fd 1.0" for part in ("A0", "A1", "B0")
    ]
    assert "10%" not in err and "\n3\n" not in err


def test_a_failed_part_stops_the_others_and_names_its_log(tmp_path) -> None:
    def part_of(name: str, seed: int) -> Path:
        (tmp_path / name).mkdir()
        return tmp_path / name

    def command(name: str, seed: int, part: Path) -> list[str]:
        if name == "bad":
            return _python("import sys; print('no such arm part'); sys.exit(3)")
        return _python("import time; time.sleep(30)")

    start = time.monotonic()
    with pytest.raises(PartFailed, match=r"(?s)bad seed 0 exited with status 3 \(log: .*study.log\):\n    no such arm part"):
        run_parts([("slow", 0), ("bad", 0), ("never", 0)], command, part_of, 2, 1, lambda *a: None)
    assert time.monotonic() - start < 20  # the slow one was stopped, not waited for
    assert not (tmp_path / "never").exists()


def test_a_signal_is_passed_on_and_no_further_part_starts(tmp_path) -> None:
    before = signal.getsignal(signal.SIGTERM)
    code = ("import signal, sys, time; signal.signal(signal.SIGTERM, lambda *a: sys.exit(143)); "
            "print('up', flush=True); time.sleep(30)")

    def part_of(name: str, seed: int) -> Path:
        (tmp_path / name).mkdir()
        return tmp_path / name

    def term_when_up() -> None:
        while not (tmp_path / "a" / "study.log").is_file() or "up" not in (tmp_path / "a" / "study.log").read_text():
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=term_when_up, daemon=True).start()
    finished = []
    stopped = run_parts([("a", 0), ("b", 0)], lambda *a: _python(code), part_of, 1, 1, lambda *a: finished.append(a))
    assert stopped == signal.SIGTERM and finished == [] and not (tmp_path / "b").exists()
    assert signal.getsignal(signal.SIGTERM) == before  # this process's handler is back
