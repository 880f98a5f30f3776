"""The workers of every model that has work: started on a model's first job, woken for each new
one, and stopped together within a deadline."""

from __future__ import annotations

import threading
import time

from ttsd.synth.worker import WorkContext, Worker


class WorkerSet:
    """`per_model` worker threads for each model, created on demand, all sharing one context."""

    def __init__(self, context: WorkContext, per_model: int, stop_event: threading.Event) -> None:
        self._context = context
        self._per_model = per_model
        self._stop_event = stop_event
        self._workers: dict[str, list[Worker]] = {}
        self._lock = threading.Lock()

    def ensure(self, model: str) -> None:
        """Start the workers of `model` on its first job; wake them for each new one."""
        with self._lock:
            workers = self._workers.get(model)
            if workers is None:
                workers = [Worker(model, index, self._context, self._stop_event) for index in range(self._per_model)]
                self._workers[model] = workers
                for worker in workers:
                    worker.start()
        for worker in workers:
            worker.wake.set()

    def stop(self, grace_s: float) -> bool:
        """Wake every worker (the stop event is set by then) and wait up to `grace_s` seconds for
        them to finish their batch; True when all did."""
        workers = self._all()
        deadline = time.monotonic() + grace_s
        for worker in workers:
            worker.wake.set()
        for worker in workers:
            worker.join(timeout=max(0.0, deadline - time.monotonic()))
        return not any(worker.is_alive() for worker in workers)

    def _all(self) -> list[Worker]:
        with self._lock:
            return [worker for workers in self._workers.values() for worker in workers]
