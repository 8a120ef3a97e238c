"""Bounds and choices of the API's queries (the spec's own bounds live in ``spec.model``)."""

MAX_LIST_LIMIT = 1000  # jobs per page
MAX_WAIT_SECONDS = 60.0  # the longest long poll (logs ?wait=, events ?timeout=)
MAX_REQUEST_BYTES = 128 * 2**20  # a request body (a submit with its code package)
# How a job list may be ordered; "priority" is dispatch order.
JOB_ORDERS = ("newest", "oldest", "priority")
MAX_GROUP_JOBS = 100  # jobs in one group submit (``POST jobs/batch``)
# Upstream ``--out`` values handed to one attempt, in all; an upstream past it is named
# but its values are left out (the job reads them over the API if it must).
MAX_UPSTREAM_BYTES = 64 * 2**20
