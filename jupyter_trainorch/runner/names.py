"""Names the supervisor and the job's process share: the files of an attempt's folder and
the ``TRAINORCH_*`` variables. Nothing is imported here, so that the job's process pays
nothing for them before its first line (``protocol`` re-exports them with the types).
"""

# Dask event topic of the supervisors' messages (output batches, "started").
EVENT_TOPIC = "trainorch"

# -- files of an attempt's folder on its worker ---------------------------------------
REQUEST_FILE = "request.json"  # the AttemptRequest without its package (mode 0600)
OUTCOME_FILE = "outcome.json"  # the AttemptOutcome without outputs, until collected
STATUS_FILE = "status.json"  # the child's ChildStatus, when it failed in a known way
OUTPUTS_FILE = "outputs.pkl"  # the variables the job gives back (cloudpickle)
VARIABLES_FILE = "variables.zip"  # the captured variables the job starts with
LOG_FILE = "log.jsonl"  # every output line, ``[seq, stream, text, time]``
RUN_ID_FILE = "mlflow_run_id"  # the attempt's MLflow run id ("" for none)
CHECKPOINTS_DIR = "checkpoints"  # when the orchestrator names no checkpoint folder
UPSTREAM_DIR = "upstream"  # the jobs this one waited on: UPSTREAM_INDEX, ID/OUTPUTS_FILE
UPSTREAM_INDEX = "upstream.json"  # [UpstreamJob without outputs], in dependency order
MODULES_DIR = "modules"  # the kernel's local modules from the package, first on the import path
KERNEL_VERSIONS_FILE = "kernel_versions.json"  # {distribution: version} the kernel had
VERSIONS_FILE = "versions.json"  # {distribution: DistributionVersions}, written by the child
DATA_FILE = "data.json"  # {"data": {name: DataRecord}, "artifacts": {name: uri}}, by the child
DATA_DIR = "data"  # remote inputs copied for the attempt: DATA_DIR/NAME/…

# -- environment ----------------------------------------------------------------------
# Of the worker: where attempts keep their folders (else the worker's local directory).
ATTEMPT_DIR_ENV = "TRAINORCH_ATTEMPT_DIR"
# Of the job's process, set by the supervisor.
JOB_ID_ENV = "TRAINORCH_JOB_ID"
JOB_NAME_ENV = "TRAINORCH_JOB_NAME"
ATTEMPT_ENV = "TRAINORCH_ATTEMPT"
CHECKPOINT_DIR_ENV = "TRAINORCH_CHECKPOINT_DIR"
PROGRESS_FD_ENV = "TRAINORCH_PROGRESS_FD"  # where ``progress()`` writes its JSON lines
UPSTREAM_DIR_ENV = "TRAINORCH_UPSTREAM_DIR"  # set when the job has dependencies
# Set by the orchestrator when no run was reserved ahead for the attempt: its id arrives
# in RUN_ID_FILE, which the child waits for only at ``import mlflow`` (``mlflow_run``).
TRACKING_ENV = "TRAINORCH_TRACKING"
# The attempt's run id, kept where MLflow does not remove it (it removes MLFLOW_RUN_ID once
# read): set by the orchestrator with a reserved run, else by the child when it arrives.
MLFLOW_RUN_ID_ENV = "TRAINORCH_MLFLOW_RUN_ID"
# On the progress pipe, ``{WANTS_RUN_ID: true}``: the child waits for RUN_ID_FILE now, so
# the orchestrator has that run made first; the supervisor's event has this type.
WANTS_RUN_ID = "wants_run_id"

# -- the worker's zygote ----------------------------------------------------------------
# Its exit code where it cannot watch its children (no pidfds): the worker then starts
# every job fresh rather than one zygote after another.
ZYGOTE_UNSUPPORTED = 78
