"""The grid on Dask (uni_icl.cluster): on a LocalCluster of 2 worker processes it stores the models the
process pool stores, bit for bit, stages in order, with a shared cache or entries sent back; a killed
worker's job resumes from its checkpoint; a scheduler that does not answer is one line and exit 2."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import distributed
import pytest

from uni_icl import cluster as cluster_module
from uni_icl.experiments import learnability, m2icl
from uni_icl.parallel import Job, run_job, train_all
from uni_icl.presets import get_preset
from uni_icl.runs import checkpoint_path
from uni_icl.runtime import current_runtime, use_runtime
from uni_icl.storage import checked_torch_load, weights_hash


@pytest.fixture(scope="module")
def client():
    """A LocalCluster of 2 single-threaded worker processes, shared by this module's tests."""
    with (
        distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster,
        distributed.Client(cluster) as connected,
    ):
        yield connected


def smoke_grid() -> list[Job]:
    """Two stages (M2-ICL meta-trains from its pre-trained ICL) and four of chapter 2's models."""
    preset = get_preset("smoke")
    return m2icl.training_plan(preset) + learnability.training_plan(preset)[:4]


def stored(jobs: list[Job]) -> dict[str, tuple[str, dict]]:
    """Per job label: the weights hash and the training history of its stored entry."""
    found = {}
    for job in jobs:
        entry = checked_torch_load(job.path)
        assert entry is not None, f"{job.label}: not stored at {job.path}"
        found[job.label] = (weights_hash(entry["weights"]), entry["history"] | {"seconds": 0.0})
    return found


def train_into(cache: Path, progress: bool = False, **options) -> dict[str, tuple[str, dict]]:
    with use_runtime(replace(current_runtime(), cache=cache, fresh=True)):
        jobs = smoke_grid()
        assert sorted(train_all(jobs, progress=progress, **options)) == sorted(job.label for job in jobs)
        assert train_all(jobs, progress=False, **options) == []  # all stored now
        return stored(jobs)


@pytest.mark.slow
def test_the_dask_workers_store_what_the_process_pool_stores(client, tmp_path, capsys):
    local = train_into(tmp_path / "pool", workers=2)
    assert train_into(tmp_path / "dask", progress=True, executor=client) == local
    bar = capsys.readouterr().err.replace("\r", "\n").strip().splitlines()[-1]  # one bar, its last state
    assert bar.startswith("training: 100%") and f" {len(smoke_grid())}/{len(smoke_grid())} " in bar, bar


@pytest.mark.slow
def test_workers_that_cannot_see_the_cache_send_their_entries_back(client, tmp_path, monkeypatch):
    """As if the workers ran elsewhere: each job trains in its own store, gets the stage-0 model its
    stage-1 job reads, and returns what it computed; the client's cache ends up as the pool's."""
    local = train_into(tmp_path / "pool", workers=2)
    seen = []
    original = cluster_module.DaskGrid.workers_see_cache

    def seen_by_none(grid) -> bool:
        seen.append(original(grid))
        return False

    monkeypatch.setattr(cluster_module.DaskGrid, "workers_see_cache", seen_by_none)
    assert train_into(tmp_path / "returned", executor=client) == local
    assert seen == [True]  # a LocalCluster sees the cache: the private stores were forced here
    assert not list((tmp_path / "returned").glob(".client-*"))  # the marker is removed
    stores = client.run(lambda dask_worker: list(Path(dask_worker.local_directory).glob("uni_icl-stores/*")))
    assert list(stores.values()) == [[], []]  # each job's store is removed after it


@pytest.mark.slow
def test_the_runtime_scheduler_runs_the_scorecard_to_the_same_card(client, tmp_path, monkeypatch):
    """Claim 4b (two stages: M2-ICL meta-trains from its pre-trained ICL), as ``reproduce`` runs it."""
    from uni_icl import scorecard
    from uni_icl.results import scorecard_differences

    grids, original = [], cluster_module.DaskGrid
    monkeypatch.setattr(cluster_module, "DaskGrid", lambda *args: grids.append(args) or original(*args))
    cards = {}
    for name, scheduler in (("pool", None), ("dask", client.scheduler.address)):
        runtime = replace(current_runtime(), cache=tmp_path / name, scheduler=scheduler, fresh=True)
        with use_runtime(runtime):
            cards[name] = scorecard.reproduce(get_preset("smoke"), ["4b"], progress=False).to_dict()
    assert len(grids) == 1  # the dask run trained its models on the cluster
    assert scorecard_differences(cards["pool"], cards["dask"]) == []
    assert [verdict["claim"] for verdict in cards["dask"]["verdicts"]] == ["4b"]


def checkpoint_step(path: Path) -> int | None:
    saved = checked_torch_load(path) if path.exists() else None
    return None if saved is None else saved["state"]["step"]


def kill_mid_job(client, checkpoint: Path, model: Path, after: int, record: dict) -> None:
    """When ``checkpoint`` has passed step ``after``, kill -9 the worker process training it; then note
    every step the checkpoint holds until ``model`` is stored."""
    deadline = time.monotonic() + 120
    while (step := checkpoint_step(checkpoint)) is None or step < after:
        assert time.monotonic() < deadline, "the job never checkpointed"
        time.sleep(0.005)
    busy = [worker for worker, keys in client.processing().items() if keys]
    assert len(busy) == 1
    pid = client.run(os.getpid, workers=busy)[busy[0]]
    os.kill(pid, signal.SIGKILL)
    record["killed_at"] = step
    record["after_kill"] = []
    while not model.exists() and time.monotonic() < deadline:
        if (step := checkpoint_step(checkpoint)) is not None and step not in record["after_kill"]:
            record["after_kill"].append(step)
        time.sleep(0.002)


@pytest.mark.slow
def test_a_killed_workers_job_resumes_from_its_checkpoint_and_ends_as_a_local_run(client, tmp_path):
    spec = learnability.training_plan(get_preset("smoke"))[0].spec
    train = replace(spec.train, max_steps=400, eval_every=50, checkpoint_every=5, patience=0, stop_tolerance=0.0)
    spec = replace(spec, train=train)
    results = {}
    for name in ("local", "killed"):
        with use_runtime(replace(current_runtime(), cache=tmp_path / name)):
            job = run_job(spec)
            if name == "local":
                assert train_all([job], workers=1, progress=False) == [job.label]
            else:
                record: dict = {}
                args = (client, checkpoint_path(spec), job.path, 60, record)
                killer = threading.Thread(target=kill_mid_job, args=args)
                killer.start()
                assert train_all([job], executor=client, progress=False) == [job.label]
                killer.join()
                assert not checkpoint_path(spec).exists()
            results[name] = stored([job])[job.label]
    assert results["killed"] == results["local"]
    # resumed: every checkpoint written after the kill lies past the step the killed worker had reached
    assert min(record["after_kill"]) >= record["killed_at"], record
    assert max(record["after_kill"]) > record["killed_at"], record
    client.wait_for_workers(2)  # the nanny restarted the killed one


def run_cli(*arguments: str, **environment: str) -> tuple[subprocess.CompletedProcess, float]:
    """The command's result and its wall time in seconds."""
    env = {**os.environ, **environment}
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "uni_icl", *arguments], env=env, capture_output=True, text=True, timeout=600
    )
    return done, time.monotonic() - started


def test_a_scheduler_that_does_not_answer_is_one_line_and_exit_2_within_seconds(tmp_path):
    """Within seconds of what a command that stops before connecting takes (starting Python and torch)."""
    cache = str(tmp_path / "cache")
    _, baseline = run_cli("reproduce", "--preset", "smoke", "--scheduler", "nowhere", UNI_ICL_CACHE=cache)
    done, seconds = run_cli("reproduce", "--preset", "smoke", "--scheduler", "tcp://127.0.0.1:9", UNI_ICL_CACHE=cache)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "error: scheduler: no Dask scheduler answers at tcp://127.0.0.1:9 within 5 s; allowed: the address of a "
        "running scheduler, or local"
    ]
    assert seconds - baseline < cluster_module.CONNECT_SECONDS + 10
    assert not (tmp_path / "cache" / "models").exists()


def test_the_book_build_refuses_a_scheduler_that_does_not_answer_before_any_work(tmp_path):
    """UNI_ICL_SCHEDULER is checked with the build's other inputs: one line, exit 2, nothing built."""
    env = {**os.environ, "UNI_ICL_CACHE": str(tmp_path / "cache"), "UNI_ICL_SCHEDULER": "tcp://127.0.0.1:9"}
    done = subprocess.run(
        [sys.executable, "-m", "uni_icl.book.build", "--output", str(tmp_path / "out")],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "error: scheduler: no Dask scheduler answers at tcp://127.0.0.1:9 within 5 s; allowed: the address of a "
        "running scheduler, or local"
    ]
    assert not (tmp_path / "out" / "_build").exists() and not (tmp_path / "cache" / "models").exists()


@pytest.mark.parametrize(
    ("arguments", "environment", "name"),
    [
        (["--scheduler", "127.0.0.1"], {}, "--scheduler"),
        ([], {"UNI_ICL_SCHEDULER": "http://host:8786"}, "UNI_ICL_SCHEDULER"),
    ],
)
def test_a_malformed_scheduler_is_one_line_naming_where_it_came_from(tmp_path, arguments, environment, name):
    done, _ = run_cli("reproduce", "--preset", "smoke", *arguments, UNI_ICL_CACHE=str(tmp_path), **environment)
    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith(f"error: {name}: got ") and "allowed: local (a Dask LocalCluster here)" in line


def test_a_worker_of_several_threads_is_refused_in_one_line():
    """A job sets its process's runtime and torch threads: two in one process would clash."""
    info = {"workers": {"tcp://10.0.0.7:40000": {"nthreads": 1}, "tcp://10.0.0.8:40000": {"nthreads": 4}}}
    fake = type("Client", (), {"scheduler_info": lambda self: info})()
    with pytest.raises(ValueError, match=r"^scheduler: worker tcp://10.0.0.8:40000 runs 4 threads; allowed: "):
        cluster_module.check_workers(fake)


def test_the_package_imports_dask_only_when_a_scheduler_is_used():
    code = "import sys, uni_icl.cli, uni_icl.parallel, uni_icl.scorecard; print('distributed' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"
