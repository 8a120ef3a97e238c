"""The user-facing Python surface: ``Job`` handles, magics, transports."""

from .job import Job, JobFailed, get_job, jobs, submit
from .transport import TrainOrchError, connect

__all__ = ["Job", "JobFailed", "TrainOrchError", "connect", "get_job", "jobs", "submit"]
