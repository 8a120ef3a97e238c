"""Bounds and choices of the API's queries (the spec's own bounds live in ``spec.model``)."""

MAX_LIST_LIMIT = 1000  # jobs per page
MAX_WAIT_SECONDS = 60.0  # the longest long poll (logs ?wait=, events ?timeout=)
MAX_REQUEST_BYTES = 128 * 2**20  # a request body (a submit with its code package)
# How a job list may be ordered; "priority" is dispatch order.
JOB_ORDERS = ("newest", "oldest", "priority")
