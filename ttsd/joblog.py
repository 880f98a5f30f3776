"""Log records about one job carry its id and output name as structured fields (`job_id`,
`job_name`), which the JSON log writes out, so `ttsd logs` can be searched by job."""

from __future__ import annotations

import logging
from typing import Protocol

JOB_FIELDS = ("job_id", "job_name")


class JobLike(Protocol):
    """Anything with a job's id and output name (a `Job` row, a hook call)."""

    @property
    def id(self) -> str: ...

    @property
    def name(self) -> str: ...


def job_extra(job: JobLike) -> dict[str, str]:
    """The `extra=` of a log call about `job`: JSON records then carry `job_id` and `job_name`."""
    return {"job_id": job.id, "job_name": job.name}


def job_logger(logger: logging.Logger, job: JobLike) -> logging.LoggerAdapter[logging.Logger]:
    """`logger`, with every record it makes tagged with `job`'s id and name."""
    return logging.LoggerAdapter(logger, job_extra(job))
