"""Several daemons ("hosts") on one queue: each its own state directory (with the tiny models linked
in, as `DaemonEnv.create` does), all sharing one inbox, one outbox and one database."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from tests.support.daemon_harness import DaemonEnv, DaemonProcess
from ttsd.jobqueue.store import Store
from ttsd.ops.identity import HOST_ID_FILE


def shared_hosts(root: Path, tiny_models: Path, count: int, **settings: str) -> list[DaemonEnv]:
    """`count` daemon environments under `root`/host-<i>, whose inbox and outbox are `root`/inbox
    and `root`/outbox, with `settings` (e.g. TTS_DATABASE_URL) in each one's environment."""
    inbox, outbox = root / "inbox", root / "outbox"
    for folder in (inbox, outbox):
        folder.mkdir(parents=True)
    hosts = []
    for number in range(count):
        env = DaemonEnv.create(root / f"host-{number}", tiny_models)
        # Its own inbox and outbox go unused: every host serves the shared ones.
        env.inbox.rmdir()
        env.outbox.rmdir()
        env.inbox, env.outbox = inbox, outbox
        env.env.update(TTS_INBOX=str(inbox), TTS_OUTBOX=str(outbox), **settings)
        hosts.append(env)
    return hosts


def running(hosts: Iterable[DaemonEnv]) -> list[DaemonProcess]:
    """The live daemon of each host (its latest process, if it has not exited)."""
    return [host.processes[-1] for host in hosts if host.processes and host.processes[-1].process.poll() is None]


def log_records(daemons: Iterable[DaemonProcess]) -> list[dict[str, object]]:
    """Every JSON log record the daemons wrote to their log files (a line cut short by a SIGKILL is
    skipped)."""
    records = []
    for daemon in daemons:
        if not daemon.json_log.exists():
            continue
        for line in daemon.json_log.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict):
                records.append(record)
    return records


def count_messages(records: Iterable[dict[str, object]], contains: str) -> Counter[str]:
    """How many records whose message contains `contains` each job id has."""
    counted: Counter[str] = Counter()
    for record in records:
        message = record.get("message", "")
        if isinstance(message, str) and contains in message:
            counted[str(record.get("job_id"))] += 1
    return counted


def host_id_of(host: DaemonEnv) -> str:
    """The id a host's daemon prefixes its leases with (made on its first start)."""
    return (host.state / HOST_ID_FILE).read_text(encoding="ascii").strip()


def leased_by(store: Store, owner: str) -> list[str]:
    """The names of the running jobs leased under tokens `owner` minted."""
    return [
        job.name for job in store.jobs(state="running", limit=None) if (job.lease_token or "").startswith(f"{owner}.")
    ]
