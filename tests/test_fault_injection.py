"""Nothing lost, nothing stale, nothing hangs: the store and the commands under hostile input (issue 34).

One test per failure the issue found (items 2 to 7), and a property-based test (hypothesis) that
damages a small smoke cache at random (flipped bytes, truncation, entries of the wrong type, JSON
nested too deep, a FIFO or a symbolic link in an entry's place) and checks that the command then
prints exactly the clean run's numbers, recomputing what it must, with warnings of one line and
never a traceback.
"""

import contextlib
import hashlib
import io
import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import time
import warnings
from dataclasses import asdict
from pathlib import Path
from unittest import mock

import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from uni_icl import scorecard
from uni_icl.book import build as book_build
from uni_icl.cli import main
from uni_icl.confirm import confirm_paper_on_cpu
from uni_icl.experiments import selection
from uni_icl.presets import PRESETS
from uni_icl.runtime import CONFIRM_ENV, runtime_from_env, usable_cores, use_runtime
from uni_icl.storage import (
    CacheWarning,
    atomic_json_save,
    checked_json_load,
    entry_lock,
    json_entry,
    remove_stale_temporaries,
)
from uni_icl.verdicts import ClaimVerdict

CLI_TRAIN = ["train", "protonet", "prototype", "--preset", "smoke", "--no-progress"]
ACCURACY = re.compile(r"accuracy (\S+ \+- \S+)")


def run_cli(*args, env_extra=None, timeout=300):
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env_extra or {})}
    return subprocess.run(
        [sys.executable, "-m", "uni_icl", *args], capture_output=True, text=True, env=env, timeout=timeout
    )


def one_error_line(result):
    assert result.returncode == 2, result.stderr
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("error: ")
    return line


def checksummed(path, payload: bytes):
    """Write ``payload`` where the store reads, with a valid checksum line (anyone can compute one)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(hashlib.sha256(payload).hexdigest().encode() + b"\n" + payload)


def in_process(args):
    """Run the command line in this process: (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main(args)
    return status, out.getvalue(), err.getvalue()


# ---------------------------------------------------------------------------------------------
# Item 2: --output never replaces what is not a regular file, and never lies in the cache
# ---------------------------------------------------------------------------------------------


def bad_output(case, tmp_path, cache):
    if case == "a device":
        return Path("/dev/null")
    if case == "a FIFO":
        os.mkfifo(tmp_path / "fifo")
        return tmp_path / "fifo"
    if case == "a folder":
        return tmp_path
    if case == "the cache's own scorecard":
        return scorecard.scorecard_path("smoke", cache)
    return tmp_path / ("x" * 600)


@pytest.mark.parametrize("case", ["a device", "a FIFO", "a folder", "the cache's own scorecard", "a 600-byte name"])
def test_reproduce_refuses_an_output_that_is_not_a_file_it_may_write(isolated_cache, tmp_path, case):
    output = bad_output(case, tmp_path, isolated_cache)
    before = mode_of(output)
    line = one_error_line(run_cli("reproduce", "--preset", "smoke", "--only", "4a", "--output", str(output)))
    assert line.startswith("error: --output: ")
    assert not isolated_cache.exists()  # before any work
    assert mode_of(output) == before  # nothing replaced


def mode_of(path):
    try:
        return path.lstat().st_mode
    except OSError:  # missing, or a name too long to look up
        return None


def fake_experiments(monkeypatch, outcome="inconclusive"):
    """Claim 1 decided instantly by a stand-in chapter (what is tested is where the card goes)."""
    verdict = ClaimVerdict(
        claim="1", preset="smoke", quantity="q", numbers={"x": 1.0}, rule="r", outcome=outcome, chapter="c"
    )
    chapter = mock.Mock(CLAIMS=("1",), training_plan=lambda preset: [], verdicts=lambda results: [verdict])
    monkeypatch.setattr(scorecard, "EXPERIMENTS", {"1": chapter})


def test_reproduce_writes_through_a_symlink_to_its_target(tmp_path, monkeypatch):
    fake_experiments(monkeypatch)
    target, link = tmp_path / "cards" / "card.json", tmp_path / "link.json"
    target.parent.mkdir()
    target.write_text("old")
    link.symlink_to(target)
    status, _, err = in_process(["reproduce", "--preset", "smoke", "--only", "1", "--output", str(link)])
    assert status == 0, err
    assert link.is_symlink() and link.resolve() == target
    assert [v["claim"] for v in json.loads(target.read_text())["verdicts"]] == ["1"]


@pytest.mark.parametrize("case", ["a file", "a device", "inside the cache", "a 600-byte name", "an unusable cache"])
def test_the_book_builder_refuses_bad_output_and_cache_in_one_line(isolated_cache, tmp_path, monkeypatch, case, capsys):
    output = tmp_path / "site"
    if case == "a file":
        output.write_text("x")
    elif case == "a device":
        output = Path("/dev/null")
    elif case == "inside the cache":
        output = isolated_cache / "site"
    elif case == "a 600-byte name":
        output = tmp_path / ("x" * 600)
    else:
        (tmp_path / "blocker").write_text("x")
        monkeypatch.setenv("UNI_ICL_CACHE", str(tmp_path / "blocker" / "cache"))
    monkeypatch.setattr(book_build, "stage_sources", mock.Mock(side_effect=AssertionError("work started")))
    assert book_build.main(["--output", str(output)]) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(("error: --output: ", "error: cache folder: "))


# ---------------------------------------------------------------------------------------------
# Item 3: an entry the store cannot decode is damage; nothing is followed or waited on
# ---------------------------------------------------------------------------------------------


def test_deeply_nested_json_is_discarded_and_recomputed(tmp_path):
    path = tmp_path / "entry.json"
    checksummed(path, b"[" * 200_000 + b"]" * 200_000)
    with pytest.warns(CacheWarning, match="nested too deep"):
        assert json_entry(path, lambda: {"fresh": 1}) == {"fresh": 1}
    assert checked_json_load(path) == {"fresh": 1}


def test_an_entry_of_the_wrong_type_is_discarded_and_recomputed(tmp_path):
    path = tmp_path / "entry.json"
    checksummed(path, b"[1, 2, 3]")

    def needs_a_dict(value):
        value["mean"]  # a list raises TypeError here

    with pytest.warns(CacheWarning, match="invalid"):
        assert json_entry(path, lambda: {"mean": 0.5}, needs_a_dict) == {"mean": 0.5}


@pytest.mark.parametrize("where", ["entry", "lock"])
def test_a_fifo_where_an_entry_or_a_lock_belongs_does_not_hang_the_command(isolated_cache, where):
    from uni_icl.experiments.common import classification_run, classification_task
    from uni_icl.runs import model_path

    scale = PRESETS["smoke"].classification
    entry = model_path(classification_run(scale, "protonet", classification_task(scale, "prototype")))
    entry.parent.mkdir(parents=True)
    fifo = entry if where == "entry" else entry.with_name(entry.name + ".lock")
    os.mkfifo(fifo)
    result = run_cli(*CLI_TRAIN, timeout=240)  # hanging would raise TimeoutExpired
    assert result.returncode == 0, result.stderr
    assert [line.startswith("warning: ") and str(fifo) in line for line in result.stderr.strip().splitlines()] == [True]
    assert stat.S_ISREG(fifo.stat().st_mode)


def test_a_dangling_symlink_at_a_lock_creates_nothing_outside_the_cache(tmp_path):
    entry, outside = tmp_path / "cache" / "entry.json", tmp_path / "outside"
    entry.parent.mkdir()
    entry.with_name("entry.json.lock").symlink_to(outside)
    with pytest.warns(CacheWarning, match="not a regular file"), entry_lock(entry):
        pass
    assert not outside.exists()
    assert stat.S_ISREG(entry.with_name("entry.json.lock").lstat().st_mode)


def test_a_symlink_where_an_entry_belongs_is_not_followed(tmp_path):
    entry, elsewhere = tmp_path / "cache" / "entry.json", tmp_path / "elsewhere.json"
    atomic_json_save({"planted": True}, elsewhere)
    entry.parent.mkdir()
    entry.symlink_to(elsewhere)
    with pytest.warns(CacheWarning, match="symbolic link"):
        assert json_entry(entry, lambda: {"fresh": 1}) == {"fresh": 1}
    assert checked_json_load(elsewhere) == {"planted": True}  # the link's target is untouched
    assert not entry.is_symlink()


def dead_pid():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_temporary_files_of_writers_that_are_gone_are_removed_on_the_next_write(tmp_path):
    now = time.time()
    dead = tmp_path / f".entry.json.{dead_pid()}.abcdefgh.tmp"
    stale = tmp_path / f".other.json.{os.getpid()}.ijklmnop.tmp"  # a live PID, but untouched for 2 hours
    live = tmp_path / f".third.json.{os.getpid()}.qrstuvwx.tmp"  # being written now
    mine = tmp_path / ".notes.tmp"  # not the store's
    for path, age in ((dead, 120), (stale, 7200), (live, 0), (mine, 7200)):
        path.write_text("partial")
        os.utime(path, (now - age, now - age))
    atomic_json_save({"a": 1}, tmp_path / "entry.json")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["entry.json", live.name, mine.name])
    assert remove_stale_temporaries(tmp_path, now=now + 7200) == [live]


# ---------------------------------------------------------------------------------------------
# Item 4: resource numbers are bounded before any work; a dead process holds no lock
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["UNI_ICL_THREADS", "UNI_ICL_WORKERS"])
def test_huge_thread_and_worker_counts_are_refused_before_any_work(isolated_cache, name):
    line = one_error_line(run_cli(*CLI_TRAIN, env_extra={name: "100000"}))
    assert line.startswith(f"error: {name}: got 100000; allowed: integers from 1 to {4 * usable_cores()}")
    assert not isolated_cache.exists()


def test_counts_up_to_the_bound_are_accepted():
    bound = str(4 * usable_cores())
    runtime = runtime_from_env({"UNI_ICL_THREADS": bound, "UNI_ICL_WORKERS": bound})
    assert runtime.threads == runtime.workers == int(bound)
    with pytest.raises(ValueError, match="allowed: integers from 1 to"):
        runtime_from_env({"UNI_ICL_WORKERS": "9" * 5000})


HOLD_LOCK = """
import sys, time
from pathlib import Path
from uni_icl.storage import entry_lock
with entry_lock(Path(sys.argv[1])):
    print("locked", flush=True)
    time.sleep(600)
"""


def test_a_killed_process_leaves_no_lock_behind(tmp_path):
    entry = tmp_path / "entry.json"
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(entry)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    holder.kill()
    holder.wait(timeout=60)
    started = time.monotonic()
    with entry_lock(entry):
        pass
    assert time.monotonic() - started < 5


# ---------------------------------------------------------------------------------------------
# Item 5: the paper preset on a CPU asks first; smoke and quick never ask
# ---------------------------------------------------------------------------------------------


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present: paper runs without asking")
def test_paper_on_a_cpu_states_the_estimate_and_how_to_go_on(isolated_cache):
    line = one_error_line(run_cli("reproduce", "--preset", "paper", "--only", "4a"))
    assert re.match(r"error: preset: paper without a GPU trains 15 models on the CPU for about \d+ \w+ ", line)
    assert f"set {CONFIRM_ENV}=1" in line
    assert not isolated_cache.exists()


def test_confirmation_or_a_smaller_preset_never_asks():
    def plan():
        raise AssertionError("the plan is only built when the question may be asked")

    confirm_paper_on_cpu(PRESETS["smoke"], plan)
    confirm_paper_on_cpu(PRESETS["quick"], plan)
    with use_runtime(runtime_from_env({CONFIRM_ENV: "1"})):
        confirm_paper_on_cpu(PRESETS["paper"], plan)


# ---------------------------------------------------------------------------------------------
# Item 6: SIGTERM is Ctrl-C: one line, checkpoint kept, exit 143, resumable
# ---------------------------------------------------------------------------------------------

LONG_TRAINING = """
import sys
from dataclasses import replace
from uni_icl import presets

smoke = presets.PRESETS["smoke"]
train = replace(smoke.classification.icl_train, max_steps=int(sys.argv[1]), eval_every=50, checkpoint_every=20)
presets.PRESETS["smoke"] = replace(smoke, classification=replace(smoke.classification, icl_train=train))
from uni_icl.cli import main

sys.exit(main(["train", "icl", "prototype", "--preset", "smoke", "--no-progress"]))
"""


def long_training(cache, steps=1000):
    env = {**os.environ, "UNI_ICL_CACHE": str(cache), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-c", LONG_TRAINING, str(steps)]
    return subprocess.Popen(command, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_sigterm_saves_the_checkpoint_prints_one_line_and_the_rerun_resumes_to_the_same_numbers(tmp_path):
    cache = tmp_path / "stopped"
    process = long_training(cache)
    deadline = time.monotonic() + 240
    while not list((cache / "models").glob("*.ckpt")) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert process.poll() is None, process.communicate()
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 143, stderr
    [line] = stderr.strip().splitlines()
    assert line.startswith("interrupted: ICL on prototype: stopped at step ") and "run the same command" in line
    [checkpoint] = (cache / "models").glob("*.ckpt")
    assert str(checkpoint) in line
    resumed, reference = long_training(cache), long_training(tmp_path / "reference")
    numbers = [ACCURACY.search(p.communicate(timeout=600)[0]).group(1) for p in (resumed, reference)]
    assert resumed.returncode == reference.returncode == 0
    assert numbers[0] == numbers[1]


SLOW_IMPORT = """
import runpy, sys, time

class SlowCli:  # importing uni_icl.cli stalls here, as importing torch does for seconds
    def find_spec(self, name, path=None, target=None):
        if name == "uni_icl.cli":
            print("importing", flush=True)
            time.sleep(300)

sys.meta_path.insert(0, SlowCli())
sys.argv = ["uni_icl", "train", "protonet", "prototype", "--preset", "smoke"]
runpy.run_module("uni_icl", run_name="__main__")
"""


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_signal_while_the_package_imports_is_one_line(isolated_cache, stop):
    command = [sys.executable, "-c", SLOW_IMPORT]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "importing"
    process.send_signal(stop)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 128 + stop
    assert stderr.strip().splitlines() == ["interrupted: before any work started; nothing was done"]
    assert not isolated_cache.exists()


BUILD_STOPPED = """
import sys, time
from uni_icl.book import build

def train_book(preset):
    print("training", flush=True)
    time.sleep(300)

build.train_book = train_book
sys.exit(build.main(["--output", sys.argv[1]]))
"""


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT])
def test_the_book_builder_stops_in_one_line_and_removes_its_staging_folder(tmp_path, stop):
    site = tmp_path / "site"
    env = {**os.environ, "UNI_ICL_PRESET": "smoke", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-c", BUILD_STOPPED, str(site)]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "training"
    assert (site / "_build" / "source" / "_toc.yml").exists()
    process.send_signal(stop)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 128 + stop
    assert len(stderr.strip().splitlines()) == 1 and stderr.startswith("interrupted: ")
    assert not (site / "_build" / "source").exists()


# ---------------------------------------------------------------------------------------------
# Item 7: a scorecard is checked when read
# ---------------------------------------------------------------------------------------------


def verdict_3a(effect, outcome, ungated=None, converged=True):
    """Claim 3a under the rule in force: ICL (mixture) - selector on rescaled radius, effect +- 0.005."""
    return asdict(
        ClaimVerdict(
            claim="3a",
            preset="smoke",
            quantity="q",
            numbers={"margin": 0.01, "rescaled": {"icl_minus_selector": [effect, 0.005]}},
            rule=selection.RULE_3A,
            outcome=outcome,
            chapter="book/03_selection",
            notes={"unconverged": [] if converged else ["ICL on mixture (seeds 0)"], "ungated_outcome": ungated},
            rests_on=[
                {
                    "learner": "icl",
                    "train_family": "mixture",
                    "runs": [dict(seed=0, steps=9, converged=converged, remaining_gain_bound=0.0)],
                }
            ],
        )
    )


def card(*verdicts):
    return {
        "preset": "smoke",
        "wall_seconds": 1.0,
        "verdicts": list(verdicts),
        "calibration": None,
        "budget_ladder": [],
    }


def test_a_scorecard_whose_outcomes_follow_from_its_evidence_is_read():
    for verdict in (
        verdict_3a(0.05, "reproduced", "reproduced"),
        verdict_3a(-0.05, "not reproduced", "not reproduced"),
        verdict_3a(0.012, "inconclusive", "inconclusive"),
        verdict_3a(0.05, "inconclusive", "reproduced", converged=False),
    ):
        assert scorecard.Scorecard.from_dict(card(verdict)).verdicts[0].outcome == verdict["outcome"]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (card(verdict_3a(0.05, "not reproduced", "reproduced")), "claim 3a: outcome 'not reproduced', but its rule"),
        (card(verdict_3a(0.05, "not reproduced", "not reproduced")), "claim 3a: the rule gives 'reproduced'"),
        (card(verdict_3a(0.05, "reproduced", "reproduced", converged=False)), "claim 3a: outcome 'reproduced'"),
        (
            card(verdict_3a(0.05, "reproduced", "reproduced"), verdict_3a(0.05, "reproduced", "reproduced")),
            "claim 3a: appears 2 times",
        ),
        (
            card({**verdict_3a(0.05, "reproduced", "reproduced"), "outcome": "sort of"}),
            "verdict.outcome: unknown value",
        ),
    ],
)
def test_a_flipped_outcome_or_a_claim_twice_is_refused_naming_the_claim(data, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        scorecard.Scorecard.from_dict(data)


def test_a_stored_scorecard_with_a_flipped_outcome_is_not_shown():
    path = scorecard.scorecard_path("smoke")
    atomic_json_save(card(verdict_3a(0.05, "not reproduced", "reproduced")), path)
    with pytest.warns(CacheWarning, match="claim 3a: outcome 'not reproduced'"):
        assert scorecard.load_scorecard("smoke") is None


# ---------------------------------------------------------------------------------------------
# Item 8: random damage to a smoke cache never changes a number and never gives a traceback
# ---------------------------------------------------------------------------------------------

EXAMPLES = 30


@pytest.fixture(scope="module")
def clean_cache(tmp_path_factory):
    """A smoke cache from one ``train`` command (a model and its test result), and the line it printed."""
    folder = tmp_path_factory.mktemp("clean") / "cache"
    with mock.patch.dict(os.environ, {"UNI_ICL_CACHE": str(folder)}):
        status, out, err = in_process(CLI_TRAIN)
    assert status == 0, err
    return folder, ACCURACY.search(out).group(1)


def torch_bytes(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


RETYPED = {  # payloads of the wrong type or shape, with a valid checksum line: only decoding can tell
    "a list": b"[1, 2, 3]",
    "a string": b'"accuracy"',
    "null": b"null",
    "nested too deep": b"[" * 100_000 + b"]" * 100_000,
    "a dict of wrong types": b'{"mean": "high", "per_position": {}, "weights": 3}',
    "tensors, not a model": torch_bytes({"weights": torch.zeros(3), "history": [1.0]}),
    "a bare tensor": torch_bytes(torch.ones(2, 2)),
    "not UTF-8": b"\xff\xfe\x00{",
}
DAMAGE = st.one_of(
    st.tuples(st.just("flip"), st.lists(st.tuples(st.integers(0, 10**9), st.integers(1, 255)), min_size=1, max_size=4)),
    st.tuples(st.just("truncate"), st.floats(0, 1, exclude_max=True)),
    st.tuples(st.just("retype"), st.sampled_from(sorted(RETYPED))),
    st.tuples(st.just("fifo"), st.none()),
    st.tuples(st.just("symlink"), st.sampled_from(["dangling", "to another entry"])),
)


def damage(path: Path, how, other: Path) -> None:
    kind, detail = how
    data = path.read_bytes() if path.is_file() and not path.is_symlink() else b""
    if kind == "flip" and data:
        data = bytearray(data)
        for position, mask in detail:
            data[position % len(data)] ^= mask
        path.write_bytes(bytes(data))
    elif kind == "truncate":
        path.write_bytes(data[: int(detail * len(data))])
    elif kind == "retype":
        checksummed(path, RETYPED[detail])
    else:
        path.unlink(missing_ok=True)
        if kind == "fifo":
            os.mkfifo(path)
        else:
            path.symlink_to(path.with_name("gone") if detail == "dangling" else other)


ENTRIES = {
    "model": "models/*.pt",
    "model lock": "models/*.lock",
    "result": "results/*.json",
    "result lock": "results/*.lock",
}
DAMAGES = st.dictionaries(st.sampled_from(sorted(ENTRIES)), DAMAGE, min_size=1)


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(DAMAGES)
@example({"result": ("retype", "nested too deep")})
@example({"model": ("retype", "tensors, not a model"), "result": ("retype", "a dict of wrong types")})
@example({"model": ("fifo", None), "result lock": ("fifo", None)})
@example({"result": ("symlink", "to another entry"), "model lock": ("symlink", "dangling")})
@example({"model": ("truncate", 0.5), "result": ("flip", [(70, 1)])})
def test_random_damage_to_the_cache_never_changes_a_number(clean_cache, tmp_path_factory, damages):
    clean, numbers = clean_cache
    cache = tmp_path_factory.mktemp("damaged") / "cache"
    shutil.copytree(clean, cache)
    for entry, how in damages.items():
        [path] = cache.glob(ENTRIES[entry])
        [other] = cache.glob(ENTRIES["result" if entry == "model" else "model"])
        damage(path, how, other)
    with mock.patch.dict(os.environ, {"UNI_ICL_CACHE": str(cache)}), warnings.catch_warnings():
        warnings.simplefilter("always")
        first = in_process(CLI_TRAIN)
        second = in_process(CLI_TRAIN)
    for status, out, err in (first, second):
        assert status == 0, err
        assert ACCURACY.search(out).group(1) == numbers
        assert all(line.startswith("warning: ") for line in err.strip().splitlines()), err
    assert "loaded" in second[1] and not second[2]  # the first run healed the cache
