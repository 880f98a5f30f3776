"""The HTTP front door as one part of the daemon: built from the daemon's queue, publisher and
workers, started with it, stopped first when it stops (no new requests while work winds down)."""

from __future__ import annotations

import logging
import threading

from ttsd.config import Settings
from ttsd.delivery.publish import StatusPublisher
from ttsd.http.app import create_app
from ttsd.http.door import FrontDoor
from ttsd.http.server import STOP_TIMEOUT_S, HttpServer, bind
from ttsd.http.watch import JobWatch
from ttsd.intake.jobfile import job_defaults
from ttsd.intake.requests import Submissions
from ttsd.jobqueue.protocols import FrontDoorQueue
from ttsd.synth.chunk_files import ChunkFiles
from ttsd.synth.supervisor import Supervisor

log = logging.getLogger(__name__)


class HttpFrontDoor:
    """The server thread and the job watcher, together."""

    def __init__(self, door: FrontDoor, server: HttpServer) -> None:
        self.door = door
        self.server = server

    @classmethod
    def build(
        cls,
        settings: Settings,
        store: FrontDoorQueue,
        publisher: StatusPublisher,
        workers: Supervisor,
        chunk_files: ChunkFiles,
        stop_event: threading.Event,
    ) -> HttpFrontDoor:
        """Bind the address now (a port in use stops the daemon at start, saying so)."""
        assert settings.http is not None
        defaults = job_defaults(settings)
        submissions = Submissions(defaults, settings.max_queue_size, store, publisher, on_enqueued=workers.ensure)
        door = FrontDoor(
            settings=settings,
            store=store,
            outbox=publisher.outbox,
            submissions=submissions,
            watch=JobWatch(store, stop_event),
            chunk_files=chunk_files,
            registry=defaults.registry,
            workers=workers.loaded,
            listen=workers.listen,
        )
        return cls(door, HttpServer(create_app(door), bind(settings.http)))

    def start(self) -> None:
        """Serve."""
        self.door.watch.start()
        self.server.start()
        log.info("serving HTTP on http://%s", self.server.address)

    def stop(self) -> None:
        """Stop serving; the watcher ends with the daemon's stop event, set before this."""
        self.server.stop()
        self.door.watch.join(timeout=STOP_TIMEOUT_S)
