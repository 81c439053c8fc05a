"""Encoding shards on a Ray cluster: actors that each hold the model, one shard per call.

`encode_shards_ray` keeps the local engine's contract (the same output shards, done markers,
`resume`, error policy, error logs and summary) because each actor runs the local engine's
`ShardEncoder` on whole shards. The driver hands shards to idle actors; a shard whose actor
died or failed is retried, at most `max_retries` times and on a fresh actor after a death,
then reported. Inside an actor a thread reads and decodes the shard ahead of the model, so
CPU decoding overlaps encoding on the GPU.
"""

from __future__ import annotations

import queue
import threading
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from vqtok import VQTokenizer
from vqtok.pipelines.config import JobConfig
from vqtok.pipelines.data.batches import MediaBatches
from vqtok.pipelines.data.sources import REMOTE_PREFIXES, Placement
from vqtok.pipelines.data.tario import partial_path
from vqtok.pipelines.errors import ErrorPolicy, PipelineError, UsageError
from vqtok.pipelines.jobs.common import ShardOutputs, load_model
from vqtok.pipelines.jobs.encode import (
    EncodeConfig,
    EncodeJob,
    EncodeSummary,
    ShardEncoder,
    encode_shards,
    whole_media_config,
)
from vqtok.pipelines.progress import ShardProgress

T = TypeVar("T")
RAY_MISSING = "--engine ray needs Ray; install it with: pip install 'vqtok[ray]'"


@dataclass
class RayConfig(JobConfig):
    """Where and how wide a Ray job runs.

    These are the `--ray-address`, `--*-per-worker` and `--concurrency` flags.
    """

    address: str | None = None
    # Actors, each with its own model; None: as many as the cluster fits.
    concurrency: int | None = None
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0
    max_retries: int = 2  # further attempts for a shard whose actor died or failed
    read_ahead: int = 4  # decoded batches an actor keeps ready for the model

    def problems(self) -> list[str]:
        """Positive concurrency and read-ahead, resources and retries not negative.

        Returns:
            One message per broken rule.
        """
        found = []
        if self.concurrency is not None and self.concurrency < 1:
            found.append(f"concurrency must be at least 1, got {self.concurrency}")
        if not (self.cpus_per_worker >= 0 and self.gpus_per_worker >= 0):
            found.append("cpus_per_worker and gpus_per_worker must not be negative")
        if self.max_retries < 0:
            found.append(f"max_retries must be 0 or more, got {self.max_retries}")
        if self.read_ahead < 1:
            found.append(f"read_ahead must be at least 1, got {self.read_ahead}")
        return found


def import_ray() -> Any:
    """The `ray` module, or a `UsageError` saying how to install it.

    Returns:
        The imported `ray` module.

    Raises:
        UsageError: When Ray is not installed.
    """
    try:
        import ray
    except ImportError:
        raise UsageError(RAY_MISSING) from None
    return ray


def encode_shards_ray(
    model: VQTokenizer | str | Path,
    shards: str | list[str],
    out_dir: str | Path,
    config: EncodeConfig | None = None,
    ray_config: RayConfig | None = None,
) -> EncodeSummary:
    """`encode_shards` on Ray: same arguments, outputs and summary (`config.workers` is unused).

    Every node must read `model` (when a path), the shards and `out_dir` at the same paths.

    Args:
        model: A VQTokenizer or its checkpoint path.
        shards: Media shards: a folder, file, brace pattern or URL, or a list of them.
        out_dir: Folder for the code shards, as for `encode_shards`.
        config: The encode options, as for `encode_shards`.
        ray_config: The Ray address, actors and their resources, retries and read-ahead.

    Returns:
        What the job did, as `encode_shards` returns it (this process is rank 0 of 1).

    Raises:
        UsageError: Before touching `out_dir`, when Ray is missing or the options clash
            (e.g. `--device cuda` without GPUs per worker); later as `encode_shards` does.
        PipelineError: As `encode_shards` does, and when a shard fails on every attempt.
    """
    config = config or EncodeConfig()
    engine = RayEngine(ray_config)
    import_ray()
    if config.runtime.device.startswith("cuda") and not engine.config.gpus_per_worker:
        raise UsageError("--device cuda on Ray needs --gpus-per-worker, or the workers get no GPU")
    return encode_shards(model, shards, out_dir, config, Placement(), engine=engine)


class ShardWorker:
    """The body of a Ray actor: loads the model once, then encodes one whole shard per call.

    Args:
        source: The tokenizer, or its resolved checkpoint path.
        config: The encode options.
        out_dir: The job's output folder, as every node sees it.
        read_ahead: Decoded batches kept ready for the model.
    """

    def __init__(
        self, source: VQTokenizer | str, config: EncodeConfig, out_dir: str, read_ahead: int
    ) -> None:
        self.model = load_model(source, config.runtime.device)
        self.config = config
        self.outputs = ShardOutputs(Path(out_dir))
        self.policy = ErrorPolicy(config.errors.on_error, config.errors.max_error_rate)
        self.media = whole_media_config(self.model, config.media)
        self.read_ahead = read_ahead

    def encode(self, url: str, name: str) -> dict:
        """Encode shard `url` to `<out_dir>/<name>.tar`.

        Args:
            url: The media shard.
            name: The output basename.

        Returns:
            The stats that mark the shard done.
        """
        events = MediaBatches(
            [url], self.media, self.config.runtime.batch_size, {url: name}, stream=True
        )
        with ShardEncoder(self.model, self.outputs, self.config, self.policy) as encoder:
            for event in read_ahead(events, self.read_ahead):
                _, _, stats = encoder.handle(event)
        return stats  # of the last event, the shard's end


class RayEngine:
    """An `encode_shards` engine that encodes on Ray actors (connecting to or starting Ray).

    Args:
        config: The Ray options (default: `RayConfig()`).
        worker: The actor body; a subclass may add behaviour, e.g. injected faults in tests.
    """

    def __init__(self, config: RayConfig | None = None, worker: type = ShardWorker) -> None:
        self.config = config or RayConfig()
        self.worker = worker  # a subclass may add behaviour, e.g. injected faults in tests
        self.config.check()

    def __call__(self, job: EncodeJob) -> None:
        """Run `job` on Ray; Ray is shut down after, when this call started it.

        Args:
            job: The encode job, its outputs prepared.

        Raises:
            UsageError: When Ray is missing or cannot be started or joined.
            PipelineError: When a shard fails on every attempt.
        """
        ray = import_ray()
        job.outputs.save_config("ray_config.json", self.config.to_dict())
        started_here = not ray.is_initialized()
        if started_here:
            _connect(ray, self.config.address)
        try:
            _Scheduler(ray, job, self.config, self.worker).run()
        finally:
            if started_here:
                ray.shutdown()


def _connect(ray: Any, address: str | None) -> None:
    try:
        ray.init(address=address)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise UsageError(f"cannot start or join Ray (--ray-address {address}): {exc}") from None


@dataclass
class _Attempt:
    url: str
    number: int = 0  # earlier attempts at this shard


class _Scheduler:
    """Runs the shards of a job on a pool of actors, replacing dead ones and retrying shards.

    Args:
        ray: The `ray` module, initialized.
        job: The encode job.
        config: The Ray options.
        worker: The actor body.
    """

    def __init__(self, ray: Any, job: EncodeJob, config: RayConfig, worker: type) -> None:
        self.ray = ray
        self.job = job
        self.config = config
        self.actor_class = ray.remote(
            num_cpus=config.cpus_per_worker, num_gpus=config.gpus_per_worker
        )(worker)
        source = (
            ray.put(job.source)
            if isinstance(job.source, VQTokenizer)
            else str(Path(job.source).resolve())
        )
        self.worker_args = (source, job.config, str(job.outputs.root.resolve()), config.read_ahead)
        self.actors: list[Any] = []
        self.running: dict[Any, tuple[Any, _Attempt]] = {}  # task -> (actor, attempt)
        self.failures: list[str] = []

    def run(self) -> None:
        waiting = deque(_Attempt(url) for url in self.job.todo)
        idle = [self._new_actor() for _ in range(self._actor_count(len(waiting)))]
        try:
            with ShardProgress(len(self.job.todo), enabled=self.job.config.progress) as progress:
                while waiting or self.running:
                    while idle and waiting:
                        self._submit(idle.pop(), waiting.popleft())
                    idle.append(self._collect(waiting, progress))
        finally:
            self._stop()
        if self.failures:
            raise PipelineError(
                f"{len(self.failures)} shard(s) failed after {self.config.max_retries + 1} "
                f"attempt(s): {'; '.join(self.failures)} (rerun with --resume to retry them)"
            )

    def _actor_count(self, shards: int) -> int:
        if self.config.concurrency:
            return min(self.config.concurrency, shards)
        resources = self.ray.cluster_resources()
        fits = [
            resources.get(kind, 0) / need
            for kind, need in (
                ("CPU", self.config.cpus_per_worker),
                ("GPU", self.config.gpus_per_worker),
            )
            if need
        ]
        return max(1, min(int(min(fits, default=shards)), shards))

    def _new_actor(self) -> Any:
        actor = self.actor_class.remote(*self.worker_args)
        self.actors.append(actor)
        return actor

    def _submit(self, actor: Any, attempt: _Attempt) -> None:
        task = actor.encode.remote(_portable(attempt.url), self.job.names[attempt.url])
        self.running[task] = (actor, attempt)

    def _collect(self, waiting: deque[_Attempt], progress: ShardProgress) -> Any:
        """Wait for one shard; count it, or queue it again. Returns the actor now free."""
        [task], _ = self.ray.wait(list(self.running), num_returns=1)
        actor, attempt = self.running.pop(task)
        try:
            stats = self.ray.get(task)
        except self.ray.exceptions.RayTaskError as exc:
            if isinstance(exc.cause, PipelineError):  # the error policy stopped the job, as locally
                raise exc.cause from None
            self._retry_or_report(attempt, exc, waiting)
            return actor
        except self.ray.exceptions.RayError as exc:  # the actor or its node died: replace it
            self._retry_or_report(attempt, exc, waiting)
            self.ray.kill(actor)
            return self._new_actor()
        self.job.summary.add_shard(stats, self.job.outputs.errors(stats["shard"]))
        progress.advance(samples=stats["count"], errors=stats["skipped"], shards=1)
        return actor

    def _retry_or_report(self, attempt: _Attempt, exc: Exception, waiting: deque[_Attempt]) -> None:
        if attempt.number < self.config.max_retries:
            waiting.append(_Attempt(attempt.url, attempt.number + 1))
        else:
            self.failures.append(f"{self.job.names[attempt.url]}: {_reason(exc)}")

    def _stop(self) -> None:
        """Kill the actors; drop the partial output of shards they had not finished."""
        for actor in self.actors:
            self.ray.kill(actor)
        if self.running:  # wait until the kills land, so no actor writes after the cleanup
            self.ray.wait(list(self.running), num_returns=len(self.running), timeout=30)
        for _, attempt in self.running.values():
            partial_path(self.job.outputs.tar(self.job.names[attempt.url])).unlink(missing_ok=True)


def _portable(url: str) -> str:
    """The URL as other processes (with another working directory) must see it."""
    return url if url.startswith(REMOTE_PREFIXES) else str(Path(url).resolve())


def _reason(exc: Exception) -> str:
    cause = getattr(exc, "cause", None)
    if isinstance(cause, BaseException):
        return f"{type(cause).__name__}: {cause}"
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"


_END = object()


def read_ahead(items: Iterable[T], depth: int) -> Iterator[T]:
    """Iterate `items` in a thread, at most `depth` ahead.

    Producing them thus overlaps their use. An exception of the producer is raised here,
    at its place in the stream.

    Args:
        items: What to iterate; iterated in another thread.
        depth: Most items produced ahead of their use, at least 1.

    Yields:
        The items, in order.

    Raises:
        Exception: Whatever the producer raised, at its place in the stream.
    """
    buffer: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(entry: tuple[object, BaseException | None]) -> bool:
        while not stop.is_set():
            try:
                buffer.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put((item, None)):
                    return
            put((_END, None))
        except Exception as exc:  # handed to the consumer, which raises it
            put((_END, exc))

    thread = threading.Thread(target=produce, name="vqtok-read-ahead", daemon=True)
    thread.start()
    try:
        while True:
            item, error = buffer.get()
            if error is not None:
                raise error
            if item is _END:
                return
            yield item
    finally:
        stop.set()
        thread.join()
