"""Errors the orchestrator raises for the API layer to turn into answers."""


class JobNotFound(LookupError):
    def __init__(self, job_id: str) -> None:
        super().__init__(f"there is no job {job_id!r}")


class JobStateError(ValueError):
    """A command that does not apply to the job's state (cancel a finished job)."""


class OrchestratorBusy(RuntimeError):
    """Another live orchestrator holds the store's lease."""
