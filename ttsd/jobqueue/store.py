"""The queue (SQLite or PostgreSQL): one `Store` that is every aggregate's records over one open
database.

Each aggregate is a mixin over `Database` in its own module: jobs (`JobQueries`, `JobLifecycle`),
chunks of long jobs (`ChunkRecords`), the audio cache's index (`CacheIndex`), daemon rows
(`DaemonRecords`) and the inbox files taken (`InboxFiles`). They share the engines and transactions
of that one database, and none overrides another's methods, so composing them adds nothing but
the union of their methods; call sites keep one object to pass around. Consumers are typed
against `ttsd.jobqueue.protocols`. SQL lives in `ttsd.jobqueue` only.
"""

from __future__ import annotations

from ttsd.jobqueue.cache_index import CacheIndex
from ttsd.jobqueue.chunks import ChunkRecords
from ttsd.jobqueue.daemons import DaemonRecords
from ttsd.jobqueue.inbox_files import InboxFiles
from ttsd.jobqueue.lifecycle import JobLifecycle


class Store(JobLifecycle, ChunkRecords, CacheIndex, DaemonRecords, InboxFiles):
    """Every read and write of the queue database."""
