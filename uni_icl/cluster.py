"""Train a grid on a Dask cluster: :func:`uni_icl.parallel.train_all`'s executor when a scheduler is named.

The runtime's ``scheduler`` (``--scheduler`` or ``UNI_ICL_SCHEDULER``) names a running Dask
scheduler (``tcp://host:8786``: a cluster started by ``dask-jobqueue`` on Slurm or PBS, or by
``dask scheduler`` and ``dask worker``) or ``local`` (a ``LocalCluster`` of the runtime's ``workers``
processes, one thread each, started here for the grid and closed after it). This module imports
``distributed``; the package imports it only when a scheduler is used.

:class:`DaskGrid` runs one stage of jobs at a time, as :func:`~uni_icl.parallel.train_all` asks: every
job of a stage is submitted at once with a priority that keeps the longest first, and the next
stage is submitted when every job of this one has finished. A job asks for one ``GPU`` resource
when the workers advertise one (``dask worker --resources GPU=1``, one worker per GPU), so one GPU
trains one job, or one seed ensemble, at a time; a worker picks its own device (CUDA when present).
Every worker must run one thread (``--nthreads 1``): a job sets its process's runtime and torch
threads, and trains on one thread, as in the process pool, so the stored models are the same.

**The store.** Before the grid, the client writes an empty marker file into its cache folder and
asks every worker whether it sees it there. If all do (a shared file system, or one machine), the
workers write entries into the cache themselves, under the store's locks; a killed worker's job is
rescheduled by Dask and resumes from the checkpoint the killed one left. If one does not, every job
runs in a store of its own on its worker (a fresh folder in the worker's local directory, removed
after), gets the entries of the earlier stages it may read (teachers for their students) sent
along, and returns the entries it computed, which the client stores; a killed worker's checkpoint is
then lost with it, and its job restarts from the beginning.

A job that is already running when the client stops (Ctrl-C, an error in another job) runs to its
end on a remote cluster (Dask cancels what has not started); a ``LocalCluster`` stops with the client.
"""

from __future__ import annotations

import contextlib
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

from distributed import Client, LocalCluster, as_completed, get_worker

from uni_icl.device import policy_threads
from uni_icl.parallel import Job
from uni_icl.runtime import LOCAL_SCHEDULER, Runtime, current_runtime, pick_device, use_runtime
from uni_icl.storage import entry_file, store_entry_file

CONNECT_SECONDS = 5  # how long a scheduler may take to answer before the command gives up
PRIVATE_STORES = "uni_icl-stores"  # the jobs' own stores, in a worker's local directory, when it cannot see the cache
NOT_ENTRIES = (".lock", ".tmp", ".ckpt", ".shipped")  # files of a store that are no entry of their own


def check_scheduler(address: str) -> None:
    """Raise a ValueError (one line) unless a Dask scheduler answers at ``address`` within
    :data:`CONNECT_SECONDS` and its workers so far run one thread each; ``local`` needs nothing to answer."""
    if address == LOCAL_SCHEDULER:
        return
    try:
        with Client(address, timeout=CONNECT_SECONDS) as client:
            check_workers(client)
    except (OSError, TimeoutError):
        raise ValueError(
            f"scheduler: no Dask scheduler answers at {address} within {CONNECT_SECONDS} s; allowed: the address "
            f"of a running scheduler, or {LOCAL_SCHEDULER}"
        ) from None


def check_workers(client: Client) -> None:
    """Raise a ValueError (one line) if a worker of ``client``'s cluster runs more than one thread."""
    for address, worker in client.scheduler_info()["workers"].items():
        if worker["nthreads"] != 1:
            raise ValueError(
                f"scheduler: worker {address} runs {worker['nthreads']} threads; allowed: workers of one thread "
                "each (dask worker --nthreads 1; in dask-jobqueue, processes equal to cores)"
            )


@contextlib.contextmanager
def scheduler_client(address: str) -> Iterator[Client]:
    """A client of the scheduler at ``address``, or of a LocalCluster started here for ``local``; closed after
    (the LocalCluster with it). On CUDA the LocalCluster is one worker holding the one ``GPU`` resource."""
    if address != LOCAL_SCHEDULER:
        with Client(address, timeout=CONNECT_SECONDS) as client:
            yield client
        return
    runtime = current_runtime()
    on_gpu = runtime.device.type == "cuda"
    with (
        LocalCluster(
            n_workers=1 if on_gpu else runtime.workers,
            threads_per_worker=1,
            processes=True,
            resources={"GPU": 1} if on_gpu else None,
            dashboard_address=":0",  # any free port: several clusters may run on one machine
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client


@contextlib.contextmanager
def dask_grid(executor: Client | str, plan: list[Job]) -> Iterator[DaskGrid]:
    """A :class:`DaskGrid` on ``executor`` (a client, or a scheduler's address or ``local`` to connect to
    for the grid) for ``plan``, under the installed runtime."""
    with contextlib.ExitStack() as stack:
        client = executor if isinstance(executor, Client) else stack.enter_context(scheduler_client(executor))
        runtime = current_runtime()
        cache = runtime.cache.resolve()
        cache.mkdir(parents=True, exist_ok=True)
        marker = cache / f".client-{uuid.uuid4().hex}"  # an empty file: the workers that see it share the cache
        marker.touch()
        stack.callback(marker.unlink, missing_ok=True)
        yield DaskGrid(client, plan, replace(runtime, cache=cache, scheduler=None, threads=1), marker)


class DaskGrid:
    """Runs the stages of a grid on ``client``'s workers (see the module docstring). ``plan`` is the whole
    grid, stored jobs included: its earlier stages' entries travel to workers that cannot see the cache."""

    def __init__(self, client: Client, plan: list[Job], runtime: Runtime, marker: Path) -> None:
        self.client, self.plan, self.runtime, self.marker = client, plan, runtime, marker
        client.wait_for_workers(1)
        check_workers(client)
        workers = client.scheduler_info()["workers"].values()
        self.gpus = any(worker.get("resources", {}).get("GPU", 0) >= 1 for worker in workers)
        self.shared = self.workers_see_cache()

    def workers_see_cache(self) -> bool:
        """Whether every worker sees the client's cache at its path (the marker file in it)."""
        return all(self.client.run(Path.exists, self.marker).values())

    def run_stage(self, jobs: list[Job]) -> Iterator[str]:
        """Run ``jobs`` (one stage, longest first), yielding each label as it finishes; an error in one
        cancels the others and is raised here."""
        inputs = None if self.shared else self.client.scatter([self._earlier_entries(jobs[0].stage)])[0]
        futures = [
            self.client.submit(
                run_on_worker,
                job,
                self.runtime,
                self.marker,
                inputs,
                key=f"uni_icl-{job.label}-{uuid.uuid4().hex[:8]}",
                priority=len(jobs) - rank,
                resources={"GPU": 1} if self.gpus else None,
            )
            for rank, job in enumerate(jobs)
        ]
        try:
            for future in as_completed(futures):
                label, entries = future.result()
                for name, data in entries.items():
                    store_entry_file(self.runtime.cache / name, data)
                yield label
        except BaseException:
            self.client.cancel(futures)
            raise

    def _earlier_entries(self, stage: int) -> dict[str, bytes]:
        """The stored entries of the plan's jobs of stages before ``stage``, by path within the cache."""
        entries = {}
        for job in self.plan:
            if job.stage < stage and (data := entry_file(job.path)) is not None:
                entries[_within(job.path, self.runtime.cache)] = data
        return entries


def _within(path: Path, cache: Path) -> str:
    """``path`` relative to ``cache``; a ValueError if it lies outside (a job stored elsewhere cannot travel)."""
    try:
        return path.resolve().relative_to(cache).as_posix()
    except ValueError:
        raise ValueError(f"job path: {path} lies outside the cache {cache}; allowed: a path in the cache") from None


def run_on_worker(
    job: Job, runtime: Runtime, marker: Path, inputs: dict[str, bytes] | None
) -> tuple[str, dict[str, bytes]]:
    """Run ``job`` on this worker under ``runtime`` (with this worker's device); returns its label and, when
    the workers cannot see the cache, the entries it computed (by path within the store).

    ``inputs`` None: the workers share the client's cache, whose ``marker`` this worker must see (one
    that joined later and does not is an error, not a model stored where nobody finds it). Else the
    earlier stages' entries, stored into the job's own store before it runs.
    """
    if inputs is None:
        if not marker.exists():
            raise RuntimeError(
                f"worker {get_worker().address}: cannot see the cache {runtime.cache} that the other workers share; "
                "start every worker where the cache is mounted at that path"
            )
        with use_runtime(replace(runtime, device=pick_device())), policy_threads():
            job.run()
        return job.label, {}
    store = Path(get_worker().local_directory) / PRIVATE_STORES / uuid.uuid4().hex
    try:
        with use_runtime(replace(runtime, cache=store, device=pick_device(), read_log=None)):
            for name, data in inputs.items():
                store_entry_file(store / name, data)
            with policy_threads():
                job.run()
        return job.label, {name: (store / name).read_bytes() for name in computed(store) if name not in inputs}
    finally:
        shutil.rmtree(store, ignore_errors=True)


def computed(store: Path) -> list[str]:
    """The entries in ``store`` (by path within it), less those copied from the shipped results."""
    found = []
    for path in store.rglob("*"):
        name = path.name
        entry = path.is_file() and not name.startswith(".") and not name.endswith(NOT_ENTRIES)
        if entry and not path.with_name(name + ".shipped").exists():
            found.append(path.relative_to(store).as_posix())
    return found
