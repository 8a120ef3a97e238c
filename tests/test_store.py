"""The job store on SQLite and on a real PostgreSQL server, and its schema migrations."""

from __future__ import annotations

import multiprocessing
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from postgres import PostgresServer, running_postgres
from sqlalchemy import create_engine, inspect, text

from jupyter_trainorch.store import (
    QUEUED,
    RUNNING,
    SUCCEEDED,
    AttemptRecord,
    DuplicateSubmission,
    JobRecord,
    JobStore,
    migrations,
)
from jupyter_trainorch.store.migrations import HEAD, SchemaError, alembic_config, current_revision
from jupyter_trainorch.store.orm import Base

if TYPE_CHECKING:
    from multiprocessing.synchronize import Barrier

RELEASE_0_1_0_DUMP = Path(__file__).parent / "data" / "store-0.1.0.sql"


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    with running_postgres() as server:
        yield server


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database: a new SQLite file, or a new database on the test's PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'store.db'}"
        return
    server: PostgresServer = request.getfixturevalue("pg_server")
    url = server.create_database()
    yield url
    server.drop_database(url)


@pytest.fixture
def store(db_url: str) -> Iterator[JobStore]:
    opened = JobStore(db_url)
    yield opened
    opened.close()


def job(job_id: str, user: str = "ada", key: str | None = None, **fields: object) -> JobRecord:
    return JobRecord(
        id=job_id,
        seq=0,
        name=f"job-{job_id}",
        user=user,
        state=QUEUED,
        priority=100,
        spec={"retries": {"max": 2}, "resources": {"gpus": 1}, "params": {"lr": 0.1}},
        created=time.time(),
        idempotency_key=key,
        request_hash=None if key is None else f"hash-{key}",
        **fields,  # type: ignore[arg-type]
    )


def schema_differences(url: str) -> list[object]:
    """What alembic's autogenerate would change to make the database match the ORM."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return list(compare_metadata(MigrationContext.configure(connection), Base.metadata))
    finally:
        engine.dispose()


# -- the store on both databases ---------------------------------------------------------


def test_jobs_round_trip(store: JobStore) -> None:
    first = store.create_job(job("j1", depends_on=["j0"], code_hash="abc"), b"package-1")
    second = store.create_job(job("j2", user="grace"), None)
    assert second.seq > first.seq > 0

    got = store.get_job("j1")
    assert got is not None
    assert (got.name, got.user, got.state, got.depends_on) == ("job-j1", "ada", QUEUED, ["j0"])
    assert got.spec["params"] == {"lr": 0.1} and got.max_retries == 2
    assert got.code_hash == "abc" and got.attempts == []
    assert store.get_job("missing") is None

    store.update_job("j1", state=RUNNING, started=10.5, progress={"step": 3, "total": 9})
    store.update_jobs([("j2", {"state": SUCCEEDED, "ended": 12.0, "has_outputs": True})])
    assert store.get_job("j1").progress == {"step": 3, "total": 9}  # type: ignore[union-attr]
    assert store.get_job("j2").has_outputs  # type: ignore[union-attr]

    both = store.get_jobs(["j1", "j2", "nope"], with_packages=True)
    assert both["j1"][1] == b"package-1" and both["j2"][1] is None
    assert [j.id for j in store.list_jobs()] == ["j2", "j1"]
    assert [j.id for j in store.list_jobs(states=[RUNNING])] == ["j1"]
    assert [j.id for j in store.list_jobs(user="grace", order="oldest")] == ["j2"]
    assert store.count_jobs() == 2 and store.count_jobs(states=[SUCCEEDED]) == 1
    assert [j.id for j in store.list_jobs(text="JOB-J")] == ["j2", "j1"]
    assert [j.id for j in store.list_jobs(text="j1")] == ["j1"]  # the name, and the id's start
    assert store.list_jobs(text="%") == [] and store.count_jobs(text="job-j2") == 1
    assert (
        store.list_jobs(order="priority")[0].priority
        >= store.list_jobs(order="priority")[1].priority
    )
    assert store.existing_ids(["j1", "x"]) == {"j1"}
    assert store.get_outputs("j2") is None


def test_attempts_round_trip(store: JobStore) -> None:
    store.create_job(job("j1"), None)
    store.add_attempts(
        [
            AttemptRecord("j1", 1, worker="tcp://w1", gpu_ids=["0"], started=1.0),
            AttemptRecord("j1", 2, gpu_ids=["1", "2"], process_started=2.5, pid=4321),
        ]
    )
    store.update_attempt("j1", 1, state="failed", ended=3.0, exit_code=1, infrastructure=True)
    store.update_job_and_attempt(
        "j1", 2, {"state": RUNNING}, {"state": RUNNING, "process_started": 4.0, "pid": 99}
    )
    got = store.get_job("j1")
    assert got is not None and got.state == RUNNING
    first, second = got.attempts
    assert (first.n, first.state, first.exit_code, first.infrastructure) == (1, "failed", 1, True)
    assert (first.worker, first.gpu_ids, first.process_started, first.pid) == (
        "tcp://w1",
        ["0"],
        None,
        None,
    )
    assert (second.gpu_ids, second.process_started, second.pid) == (["1", "2"], 4.0, 99)
    assert got.infrastructure_failures == 1


def test_resent_log_batches_keep_each_line_once(store: JobStore) -> None:
    store.create_job(job("j1"), None)
    assert store.max_log_seq("j1", 1) == 0
    batch = [(s, "output", f"line {s}", 100.0 + s) for s in range(1, 6)]
    assert store.append_logs("j1", 1, batch) == 5
    # A batch re-sent after a lost acknowledgement, overlapping and extending what is stored.
    overlap = [(s, "output", f"line {s}", 100.0 + s) for s in range(3, 9)]
    assert store.append_logs("j1", 1, overlap) == 3
    assert store.append_logs("j1", 1, batch) == 0
    store.append_logs("j1", 2, [(1, "error", "other attempt", 200.0)])

    lines = store.read_logs("j1", attempt=1)
    assert [line.seq for line in lines] == list(range(1, 9))
    assert [line.text for line in lines] == [f"line {s}" for s in range(1, 9)]
    assert store.max_log_seq("j1", 1) == 8 and store.max_log_seq("j1", 2) == 1
    assert store.log_seqs("j1", 1) == set(range(1, 9))
    assert [line.seq for line in store.read_logs("j1", attempt=1, after=lines[4].id)] == [6, 7, 8]
    assert len(store.read_logs("j1")) == 9


def test_lines_are_kept_compressed_in_batches_and_read_with_a_cursor(store: JobStore) -> None:
    from sqlalchemy import func, select

    from jupyter_trainorch.store.logs import MAX_BATCH_LINES
    from jupyter_trainorch.store.orm import LogBatchRow

    store.create_job(job("j1"), None)
    count = MAX_BATCH_LINES + 7  # a gap filled from the worker's file: more than a batch
    text = "epoch {} loss 0.{} " + "x" * 40
    lines = [(s, "output", text.format(s, s), 100.0 + s) for s in range(1, count + 1)]
    assert store.append_logs("j1", 1, lines) == count
    with store._session() as session:
        batches = session.scalar(select(func.count()).select_from(LogBatchRow))
        stored = session.scalar(select(func.sum(func.length(LogBatchRow.data))))
    assert batches == 2 and stored < sum(len(t) for _, _, t, _ in lines) / 3
    read = store.read_logs("j1", limit=10**6)
    assert [(x.seq, x.stream, x.text, x.time) for x in read] == [tuple(x) for x in lines]
    ids = [x.id for x in read]
    assert ids == sorted(set(ids))
    # Paging across the batches' boundary, as a follower does.
    page, cursor = [], 0
    while chunk := store.read_logs("j1", attempt=1, after=cursor, limit=1000):
        page.extend(chunk)
        cursor = chunk[-1].id
    assert [x.seq for x in page] == list(range(1, count + 1))
    # Ranks of a multi-node attempt interleave their numbers; a rank's batch sent again
    # (and one overlapping what is stored) adds only the lines not stored yet.
    rank1 = [(2 * n + 1, "output", f"rank 1 line {n}", 200.0 + n) for n in range(1, 6)]
    rank0 = [(2 * n, "output", f"rank 0 line {n}", 200.0 + n) for n in range(1, 6)]
    assert store.append_logs("j1", 2, rank1) == 5 and store.append_logs("j1", 2, rank0) == 5
    assert store.append_logs("j1", 2, rank1[2:] + [(13, "output", "late", 300.0)]) == 1
    assert store.log_seqs("j1", 2) == {*range(2, 12), 13}
    assert store.max_log_seq("j1", 2) == 13
    newest = store.read_logs("j1", after=ids[-1])
    assert [x.attempt for x in newest] == [2] * 11 and newest[-1].text == "late"


def test_a_workers_batches_are_kept_as_they_came_and_pages_match_read_logs(
    store: JobStore, tmp_path: Path
) -> None:
    from jupyter_trainorch.log_batches import unpack
    from jupyter_trainorch.runner.streams import MAX_BATCH_LINES, LineBatcher

    store.create_job(job("j1"), None)
    sent: list[dict] = []
    batcher = LineBatcher(sent.append, tmp_path / "output.log", rank=1, ranks=2)
    batcher.add([f"line {n}" for n in range(1, 4501)])  # one large read of the job's pipe
    batcher.add(["tail é"])  # not ASCII: counted line by line
    batcher.close()
    batches = [m for m in sent if "lines" in m]
    assert [m["seqs"][2] for m in batches] == [MAX_BATCH_LINES, MAX_BATCH_LINES, 501]
    for message in batches:
        lines = unpack(message["lines"])
        assert message["seqs"] == [lines[0][0], lines[-1][0], len(lines)]
        first, last, count = message["seqs"]
        assert store.append_log_batch("j1", 1, message["lines"], first, last, count) == count
    assert store.append_log_batch("j1", 1, batches[1]["lines"], *batches[1]["seqs"]) == 0
    read = store.read_logs("j1", limit=10**6)
    assert [x.seq for x in read] == [2 * n + 1 for n in range(1, 4502)]
    assert read[0].text == "[rank 1] line 1" and read[-1].text == "[rank 1] tail é"
    # Rank 0's batch spans rank 1's numbers without sharing one: every line is added.
    rank0 = LineBatcher(sent.append, tmp_path / "rank0.log", rank=0, ranks=2)
    rank0.add(["rank 0 says"] * 3)
    rank0.close()
    packed = sent[-1]
    assert store.append_log_batch("j1", 1, packed["lines"], *packed["seqs"]) == 3
    assert len(store.read_logs("j1", limit=10**6)) == 4504
    # A REST page is read_logs' lines as dicts, paged by the same cursor.
    cursor, paged = 0, []
    while page := store.read_log_page("j1", after=cursor, limit=1000):
        paged.extend(page)
        cursor = page[-1]["id"]
    assert paged == [x.to_dict() for x in store.read_logs("j1", limit=10**6)]


def test_lease_has_one_live_owner(store: JobStore) -> None:
    now = 1000.0
    assert store.acquire_lease("a", "http://a", now, ttl=10) is None
    other = store.acquire_lease("b", "http://b", now + 1, ttl=10)
    assert other is not None and (other.owner, other.url) == ("a", "http://a")
    assert store.acquire_lease("a", "http://a", now + 5, ttl=10) is None  # renewed to 1015
    assert store.acquire_lease("b", None, now + 14, ttl=10) is not None
    assert store.acquire_lease("b", None, now + 16, ttl=10) is None  # a's lease expired
    current = store.current_lease()
    assert current is not None and current.owner == "b" and current.expires == now + 26
    store.release_lease("a")  # not the owner: nothing happens
    assert store.current_lease() is not None
    store.release_lease("b")
    assert store.current_lease() is None


def test_idempotency_key_is_unique_per_user(store: JobStore) -> None:
    store.create_job(job("j1", key="k1"), None)
    with pytest.raises(DuplicateSubmission) as raised:
        store.create_job(job("j2", key="k1"), None)
    assert raised.value.job_id == "j1"
    assert store.get_job("j2") is None

    store.create_job(job("j3", user="grace", key="k1"), None)  # another user's key space
    for n in range(3):
        store.create_job(job(f"free{n}"), None)  # no key: never a duplicate

    found = store.find_by_idempotency_key("ada", "k1")
    assert found is not None and (found.id, found.request_hash) == ("j1", "hash-k1")
    assert found.idempotency_key == "k1"
    assert store.find_by_idempotency_key("grace", "k1").id == "j3"  # type: ignore[union-attr]
    assert store.find_by_idempotency_key("ada", "k2") is None
    assert store.count_jobs() == 5


def test_concurrent_creates_from_threads(store: JobStore) -> None:
    errors: list[BaseException] = []

    def create(prefix: str) -> None:
        try:
            for n in range(15):
                store.create_job(job(f"{prefix}{n}", key=f"{prefix}{n}"), b"x")
                store.append_logs(f"{prefix}{n}", 1, [(1, "output", "hi", 1.0)])
        except BaseException as err:  # reported below, in the test's own thread
            errors.append(err)

    threads = [threading.Thread(target=create, args=(p,)) for p in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    jobs = store.list_jobs()
    assert len(jobs) == 30 and len({j.seq for j in jobs}) == 30


def test_orm_matches_head_revision(store: JobStore) -> None:
    assert current_revision(store.engine) == HEAD
    assert schema_differences(store.url) == []


# -- migrations --------------------------------------------------------------------------


def test_head_constant_is_alembic_head(store: JobStore) -> None:
    from alembic.script import ScriptDirectory

    with store.engine.connect() as connection:
        assert ScriptDirectory.from_config(alembic_config(connection)).get_current_head() == HEAD


def test_upgrade_from_release_0_1_0_sqlite(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as connection:
        connection.executescript(RELEASE_0_1_0_DUMP.read_text())
    url = f"sqlite:///{path}"
    store = JobStore(url)
    try:
        assert current_revision(store.engine) == HEAD
        assert schema_differences(url) == []
        finished = store.get_job("bf1ce8852f")
        assert finished is not None
        assert (finished.name, finished.user, finished.state) == ("finished", "ada", SUCCEEDED)
        assert finished.spec["params"] == {"lr": 0.1} and finished.code_hash == "4713e467c4d957b3"
        assert finished.created == pytest.approx(1796240505.2088985)
        assert finished.idempotency_key is None and finished.request_hash is None
        (attempt,) = finished.attempts
        assert (attempt.state, attempt.worker, attempt.gpu_ids, attempt.exit_code) == (
            "succeeded",
            "tcp://127.0.0.1:40875",
            ["0"],
            0,
        )
        assert attempt.process_started is None and attempt.pid is None
        assert [(ln.seq, ln.text) for ln in store.read_logs("bf1ce8852f")] == [
            (1, "hello"),
            (2, "world"),
        ]
        assert [j.id for j in store.list_jobs()] == ["a308396f33", "bf1ce8852f"]

        # The new columns work on the upgraded database, and new rows follow the old ones.
        created = store.create_job(job("new1", key="k"), None)
        assert created.seq == 3
        with pytest.raises(DuplicateSubmission):
            store.create_job(job("new2", key="k"), None)
        store.add_attempts([AttemptRecord("new1", 1, process_started=5.0, pid=7)])
        assert store.get_job("new1").attempts[0].pid == 7  # type: ignore[union-attr]
        assert store.append_logs("bf1ce8852f", 1, [(2, "output", "world", 1.0)]) == 0
        assert store.max_log_seq("bf1ce8852f", 1) == 2
    finally:
        store.close()
    assert JobStore(url).count_jobs() == 3  # reopening at head changes nothing


def test_upgrade_from_0001_postgresql(pg_server: PostgresServer) -> None:
    from alembic import command

    url = pg_server.create_database()
    engine = create_engine(url)
    try:
        with engine.begin() as connection:
            command.upgrade(alembic_config(connection), "0001")
            connection.execute(
                text(
                    'INSERT INTO jobs (id, name, "user", state, priority, spec, depends_on, '
                    "created, progress, mlflow, has_outputs, retry_from) VALUES ('old', 'o', "
                    "'ada', 'succeeded', 100, '{\"a\": 1}', '[]', 1.5, '{}', '{}', false, 1)"
                )
            )
            connection.execute(
                text(
                    "INSERT INTO attempts (job_id, n, state, gpu_ids, infrastructure) "
                    "VALUES ('old', 1, 'succeeded', '[\"0\"]', false)"
                )
            )
        assert current_revision(engine) == "0001"
        store = JobStore(url)
        try:
            assert current_revision(store.engine) == HEAD
            old = store.get_job("old")
            assert old is not None and (old.spec, old.state, old.created) == (
                {"a": 1},
                "succeeded",
                1.5,
            )
            assert old.attempts[0].gpu_ids == ["0"] and old.attempts[0].pid is None
            assert store.create_job(job("new", key="k"), None).seq == 2
        finally:
            store.close()
        assert schema_differences(url) == []
    finally:
        engine.dispose()
        pg_server.drop_database(url)


def test_downgrade_and_upgrade_again(db_url: str) -> None:
    from alembic import command

    first = JobStore(db_url)
    first.create_job(job("j0"), None)
    first.append_logs("j0", 1, [(1, "output", "kept", 1.0), (2, "error", "both ways", 2.0)])
    first.close()
    engine = create_engine(db_url)
    try:
        with engine.begin() as connection:
            command.downgrade(alembic_config(connection), "0001")
        assert "idempotency_key" not in {c["name"] for c in inspect(engine).get_columns("jobs")}
        store = JobStore(db_url)
        store.create_job(job("j1", key="k"), None)
        assert [(x.seq, x.stream, x.text) for x in store.read_logs("j0")] == [
            (1, "output", "kept"), (2, "error", "both ways"),
        ]  # fmt: skip
        store.close()
        assert schema_differences(db_url) == []
    finally:
        engine.dispose()


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'future.db'}"
    JobStore(url).close()
    with sqlite3.connect(tmp_path / "future.db") as connection:
        connection.execute("UPDATE alembic_version SET version_num = '9999'")
    with pytest.raises(SchemaError, match="9999"):
        JobStore(url)


def test_open_at_head_is_one_fast_query(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    JobStore(url).close()

    def no_migration(*_: object) -> None:
        raise AssertionError("a store at head must not run alembic")

    monkeypatch.setattr(migrations, "_migrate", no_migration)
    timings = []
    for _ in range(5):
        started = time.perf_counter()
        JobStore(url).close()
        timings.append(time.perf_counter() - started)
    # ~2 ms on an idle machine; generous for a loaded CI runner.
    assert min(timings) < 0.05, timings


def test_importing_the_store_does_not_import_alembic() -> None:
    code = "import sys, jupyter_trainorch.store; print('alembic' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


def _open_new_store(url: str, barrier: Barrier, name: str) -> None:
    barrier.wait(timeout=60)  # both processes open the new store at the same moment
    store = JobStore(url)
    store.create_job(job(name), None)
    store.close()


def test_two_processes_open_a_new_store_at_once(db_url: str) -> None:
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(2)
    processes = [
        context.Process(target=_open_new_store, args=(db_url, barrier, f"p{n}")) for n in range(2)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=120)
    assert [p.exitcode for p in processes] == [0, 0]
    store = JobStore(db_url)
    try:
        assert store.existing_ids(["p0", "p1"]) == {"p0", "p1"}
        assert current_revision(store.engine) == HEAD
    finally:
        store.close()
