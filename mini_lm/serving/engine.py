"""The generation engine: one worker thread owns the model; requests queue for it.

Generation is CPU/GPU-bound and ``generate`` mutates shared state (the global torch seed, the
tokenizer's padding side), so exactly one thread runs it and the event loop only waits on futures.
Dynamic batching: when the worker picks up a non-streaming job it also takes every queued job with
the same settings (up to ``max_batch_size`` rows), optionally waiting ``batch_wait_s`` for more,
and runs them as one left-padded ``generate`` call. Seeded sampling runs alone: in a batch its rows
would share one random stream with other requests and the seed would not reproduce the answer.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field

from ..generation import GenerationResult, GenerationSettings, generate, stream

logger = logging.getLogger(__name__)


class ServerBusy(Exception):
    """The queue is full: the client should retry later (HTTP 429)."""


class EngineClosed(RuntimeError):
    pass


@dataclass(eq=False)
class Job:
    """One request's rows. ``future`` resolves to one GenerationResult per prompt, in order."""

    prompts: list[str]
    settings: GenerationSettings
    on_piece: Callable[[str], None] | None = None  # set: stream the (single) prompt's text pieces
    # set when its client hangs up (or a stream meets its stop string): its rows end at the next
    # token, the other rows of its batch go on; a job still queued is dropped
    cancel: threading.Event = field(default_factory=threading.Event)
    future: Future = field(default_factory=Future)

    @property
    def streaming(self) -> bool:
        return self.on_piece is not None

    def batchable(self) -> bool:
        return not self.streaming and not (self.settings.do_sample and self.settings.seed is not None)


class GenerationEngine:
    def __init__(
        self, model, tokenizer, max_pending: int = 32, max_batch_size: int = 8, batch_wait_s: float = 0.0
    ):
        self.model, self.tokenizer = model, tokenizer
        self.max_pending, self.max_batch_size, self.batch_wait_s = max_pending, max_batch_size, batch_wait_s
        self._queue: deque[Job] = deque()
        self._running = 0  # jobs taken off the queue and not finished
        self._cond = threading.Condition()
        self._closed = False
        self._thread: threading.Thread | None = None
        self.counters = {
            "requests": 0,
            "batches": 0,
            "rows": 0,
            "largest_batch": 0,
            "generated_tokens": 0,
            "errors": 0,
            "dropped": 0,  # queued jobs whose client went away before they ran
        }

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="mini-lm-generation", daemon=True)
        self._thread.start()

    def close(self, timeout: float = 30.0) -> None:
        """Stop taking jobs; queued ones fail with EngineClosed, the running one finishes."""
        with self._cond:
            self._closed = True
            dropped = list(self._queue)
            self._queue.clear()
            self._cond.notify_all()
        for job in dropped:
            job.cancel.set()
            if job.future.set_running_or_notify_cancel():
                job.future.set_exception(EngineClosed("server is shutting down"))
        if self._thread is not None:
            self._thread.join(timeout)

    def submit(self, job: Job) -> Future:
        with self._cond:
            if self._closed:
                raise EngineClosed("server is shutting down")
            if len(self._queue) + self._running >= self.max_pending:
                raise ServerBusy(f"server busy: {self.max_pending} requests are already queued or running")
            self._queue.append(job)
            self._cond.notify()
        return job.future

    def status(self) -> dict:
        with self._cond:
            return {"queued": len(self._queue), "running": self._running, **self.counters}

    def _loop(self) -> None:
        while (jobs := self._next_jobs()) is not None:
            try:
                self._run(jobs)
            finally:
                with self._cond:
                    self._running -= len(jobs)

    def _next_jobs(self) -> list[Job] | None:
        """Block for a job; return it with the compatible queued jobs batched behind it."""
        with self._cond:
            while True:
                while not self._queue and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return None
                first = self._queue.popleft()
                if self._claim(first):
                    self._running += 1
                    break
            jobs = [first]
            if first.batchable():
                deadline = time.monotonic() + self.batch_wait_s
                while self._take_compatible(jobs) and (left := deadline - time.monotonic()) > 0:
                    self._cond.wait(left)
            return jobs

    def _take_compatible(self, jobs: list[Job]) -> bool:
        """Move queued jobs with ``jobs[0]``'s settings into ``jobs``; True while rows are left."""
        rows = sum(len(j.prompts) for j in jobs)
        for job in list(self._queue):
            fits = rows + len(job.prompts) <= self.max_batch_size
            if job.cancel.is_set() or (fits and job.batchable() and job.settings == jobs[0].settings):
                if self._claim(job):
                    jobs.append(job)
                    rows += len(job.prompts)
                    self._running += 1
                self._queue.remove(job)
        return rows < self.max_batch_size

    def _claim(self, job: Job) -> bool:
        """Mark a queued job running; False (and it is dropped) when its client already went away."""
        if job.cancel.is_set():
            job.future.cancel()
        if job.future.set_running_or_notify_cancel():
            return True
        self.counters["dropped"] += 1
        return False

    def _run(self, jobs: list[Job]) -> None:
        rows = [p for job in jobs for p in job.prompts]
        self.counters["requests"] += len(jobs)
        self.counters["batches"] += 1
        self.counters["rows"] += len(rows)
        self.counters["largest_batch"] = max(
            self.counters["largest_batch"], min(len(rows), self.max_batch_size)
        )
        logger.debug("generating %d rows for %d requests", len(rows), len(jobs))
        try:
            if jobs[0].streaming:
                results = [self._stream(jobs[0])]
            else:
                cancel = [job.cancel for job in jobs for _ in job.prompts]  # a hang-up ends its rows only
                results = generate(
                    self.model, self.tokenizer, rows, jobs[0].settings, self.max_batch_size, cancel
                )
        except Exception as err:  # the request fails; the server keeps serving
            logger.exception("generation failed")
            self.counters["errors"] += 1
            for job in jobs:
                job.future.set_exception(err)
            return
        self.counters["generated_tokens"] += sum(len(r.token_ids) for r in results)
        for job in jobs:
            job.future.set_result(results[: len(job.prompts)])
            results = results[len(job.prompts) :]

    def _stream(self, job: Job) -> GenerationResult:
        pieces = stream(self.model, self.tokenizer, job.prompts[0], job.settings, cancel=job.cancel)
        while True:
            try:
                job.on_piece(next(pieces))
            except StopIteration as done:
                return done.value
