"""The job's own process.

Started by the supervisor in a process group of its own: forked by the worker's zygote
(``runner.zygote``), or as a fresh interpreter (``python -c`` running ``main``) when the
zygote cannot serve. Runs a python cell (with its captured variables and params) or a shell
command, writes ``status.json`` when it fails in a way the supervisor must know about (not
retryable), and ``outputs.pkl`` with the variables the user asked back (its files and
variables: ``protocol``). A job with data inputs stages them first (``data_inputs``), one
with artifacts logs them to MLflow once its code succeeded (``artifacts``). It dies with its parent: a watchdog kills the whole process group
if the parent disappears.

Everything this module imports is paid before the cell's first line by every fresh job
process, so it imports little: no ``typing``, ``pathlib``, ``subprocess`` or ``traceback``
until a path needs them.
"""

from __future__ import annotations

import atexit
import builtins
import json
import linecache
import os
import signal
import sys
import threading
import time

from .names import (
    KERNEL_VERSIONS_FILE,
    MODULES_DIR,
    OUTPUTS_FILE,
    PROGRESS_FD_ENV,
    REQUEST_FILE,
    STATUS_FILE,
    TRACKING_ENV,
    VARIABLES_FILE,
)

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from .protocol import AttemptRequest, ChildStatus

EXIT_NOT_RETRYABLE = 3
PARENT_CHECK = 0.5  # seconds between looks at whether the parent is still there


def _write_status(attempt_dir: str, request: AttemptRequest, error: str, retryable: bool) -> None:
    from pathlib import Path

    from ..files import write_private
    from .masking import SecretMask

    # An exception's text may quote a secret the job was given.
    mask = SecretMask((request.get("secret_env") or {}).values())
    status: ChildStatus = {"error": mask(error), "retryable": retryable}
    write_private(Path(attempt_dir, STATUS_FILE), json.dumps(status))


def _watch(parent: int, look_for_run_id: Callable[[], float | None] | None) -> None:
    """The process's one helper thread (a thread costs a forked job about a millisecond of
    CPU): the whole group ends when the parent is gone; meanwhile, when the attempt's
    MLflow run id is to arrive, it is looked for (``mlflow_run.RunIdWatch``)."""
    check_parent_at = time.monotonic() + PARENT_CHECK
    while True:
        pause = check_parent_at - time.monotonic()
        if look_for_run_id is not None:
            again = look_for_run_id()
            if again is None:
                look_for_run_id = None
            else:
                pause = min(pause, again)
        if pause > 0:
            time.sleep(pause)
        if time.monotonic() >= check_parent_at:
            if os.getppid() != parent:
                os.killpg(0, signal.SIGKILL)
            check_parent_at += PARENT_CHECK


def _forward_sigterm_to_group(kind: str) -> None:
    """SIGTERM reaches the whole group (the job's own children too). A Python cell leaves
    at once unless it listens (``checkpoint.should_stop`` replaces this handler); a command
    is waited for, so that it can save its checkpoint within the grace period."""

    def handler(signum: int, _frame: Any) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        os.killpg(0, signal.SIGTERM)
        if kind != "command":
            raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)


def run_command(attempt_dir: str, request: AttemptRequest) -> int:
    import subprocess

    fds = ()
    if os.environ.get(PROGRESS_FD_ENV):
        fds = (int(os.environ[PROGRESS_FD_ENV]),)
    proc = subprocess.Popen(["/bin/sh", "-c", request["command"]], pass_fds=fds)
    try:
        code = proc.wait()
    except SystemExit:
        proc.wait()
        raise
    if code == 127:
        _write_status(
            attempt_dir, request, f"command not found: {request['command'].split()[0]}", False
        )
    return code


def _user_traceback(exc: BaseException, filename: str) -> str:
    """The traceback from the cell down, without this bootstrap's own frames."""
    import traceback

    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename != filename:
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(exc), exc, tb))


def run_python(attempt_dir: str, request: AttemptRequest) -> int:
    filename = f"<cell {request['name']}>"
    source = request["source"]
    try:
        code = compile(source, filename, "exec")
    except SyntaxError as err:
        message = f"SyntaxError: {err.msg} (line {err.lineno})"
        print(message, file=sys.stderr)
        _write_status(attempt_dir, request, message, False)
        return EXIT_NOT_RETRYABLE
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)

    namespace: dict[str, Any] = {"__name__": "__main__", "__builtins__": builtins}
    package_path = os.path.join(attempt_dir, VARIABLES_FILE)
    if os.path.exists(package_path):
        import cloudpickle  # only when there is something to unpickle: it costs start-up time

        from ..package import read_package

        with open(package_path, "rb") as package:
            variables, _ = read_package(package.read())
        for name, blob in variables.items():
            try:
                namespace[name] = cloudpickle.loads(blob)
            except Exception as err:  # noqa: BLE001 - any unpickling failure is the user's
                message = f"variable {name!r} could not be loaded on the worker: {type(err).__name__}: {err}"
                print(message, file=sys.stderr)
                _write_status(attempt_dir, request, message, False)
                return EXIT_NOT_RETRYABLE
    namespace.update(request.get("params") or {})
    # Registered before the cell's own handlers, so it runs after them: the cell's globals
    # then go one by one as a script's do, and a file it left open is flushed, not lost
    # in a garbage cycle of functions and their globals.
    atexit.register(namespace.clear)

    try:
        exec(code, namespace)
    except SystemExit as exc:
        if exc.code in (None, 0):
            pass
        else:
            return exc.code if isinstance(exc.code, int) else 1
    except BaseException as exc:  # noqa: BLE001 - report whatever the cell raised
        sys.stderr.write(_user_traceback(exc, filename))
        sys.stderr.flush()
        _write_status(attempt_dir, request, f"{type(exc).__name__}: {exc}", True)
        return 1

    wanted = request.get("outputs") or []
    if wanted:
        missing = [name for name in wanted if name not in namespace]
        if missing:
            message = f"output variable {missing[0]!r} was not defined by the cell"
            print(message, file=sys.stderr)
            _write_status(attempt_dir, request, message, False)
            return EXIT_NOT_RETRYABLE
        import cloudpickle

        try:
            blob = cloudpickle.dumps({name: namespace[name] for name in wanted})
        except Exception as err:  # noqa: BLE001
            message = f"output variables could not be pickled: {type(err).__name__}: {err}"
            _write_status(attempt_dir, request, message, False)
            return EXIT_NOT_RETRYABLE
        with open(os.path.join(attempt_dir, OUTPUTS_FILE), "wb") as outputs:
            outputs.write(blob)
    return 0


def main(argv: list[str], parent: int | None = None) -> int:
    """Run the attempt whose folder is ``argv[1]``; ``parent``: the process whose end ends
    this one (default: the one that started it)."""
    attempt_dir = argv[1]
    with open(os.path.join(attempt_dir, REQUEST_FILE), encoding="utf-8") as handle:
        request: AttemptRequest = json.load(handle)
    parent = os.getppid() if parent is None else parent
    look_for_run_id = None
    waits_for_run_id = bool(os.environ.get(TRACKING_ENV))  # none was reserved: it follows
    if waits_for_run_id and request["kind"] != "command":
        from .mlflow_run import watch_for_run_id

        look_for_run_id = watch_for_run_id(attempt_dir)
    threading.Thread(target=_watch, args=(parent, look_for_run_id), daemon=True).start()
    _forward_sigterm_to_group(request["kind"])
    if waits_for_run_id and request["kind"] == "command":
        from .mlflow_run import wait_for_run_id

        wait_for_run_id(attempt_dir)  # its processes read the environment once, at their start
    workdir = os.getcwd()
    if workdir not in sys.path:
        sys.path.insert(0, workdir)
    modules = os.path.join(attempt_dir, MODULES_DIR)
    if os.path.isdir(modules):
        # The kernel's modules as they were at submit, before any of the same name that
        # the worker's folders hold; before the variables too, whose classes may be theirs.
        sys.path.insert(0, modules)
    if os.path.exists(os.path.join(attempt_dir, KERNEL_VERSIONS_FILE)):
        from pathlib import Path

        from .versions import check_versions  # importlib.metadata costs start-up time

        for warning in check_versions(Path(attempt_dir)):
            print(warning, file=sys.stderr, flush=True)
    if request.get("data") or request.get("data_errors"):
        from .data_inputs import stage_inputs

        failed = stage_inputs(attempt_dir, request, _write_status)
        if failed is not None:
            return failed
    if request["kind"] == "command":
        code = run_command(attempt_dir, request)
    else:
        code = run_python(attempt_dir, request)
    if code == 0 and request.get("artifacts"):
        from .artifacts import upload_artifacts  # after the job's code: MLflow only now

        code = upload_artifacts(attempt_dir, request, _write_status, workdir)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv))
