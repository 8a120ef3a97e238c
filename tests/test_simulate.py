"""The trace simulator: the placement policy replayed on a virtual clock, and its CLI."""

from __future__ import annotations

import json

import pytest

from jupyter_trainorch.cli import main
from jupyter_trainorch.policy import PreemptionRules
from jupyter_trainorch.policy.simulate import TraceJob, percentile, simulate, summary

LOW, NORMAL, URGENT = 0, 100, 300


def trace():
    return [
        TraceJob("a", gpus=2, submit=0, duration=10, priority=LOW),
        TraceJob("b", gpus=1, submit=1, duration=5, priority=NORMAL),
        TraceJob("c", gpus=2, submit=2, duration=5, priority=URGENT),
    ]


def starts(result):
    return {o.job.job_id: (o.start, o.end) for o in result.outcomes}


def test_priority_lets_the_urgent_job_go_first_and_fifo_does_not():
    by_priority = simulate(trace(), workers=1, gpus_per_worker=2)
    assert starts(by_priority) == {"a": (0, 10), "c": (10, 15), "b": (15, 20)}
    assert by_priority.inversions == 0
    by_arrival = simulate(trace(), workers=1, gpus_per_worker=2, policy="fifo")
    # b takes one of the two freed GPUs, so c waits for b: the inversion priorities prevent.
    assert starts(by_arrival) == {"a": (0, 10), "b": (10, 15), "c": (15, 20)}
    assert by_arrival.inversions == 1


def test_the_figures_of_a_run():
    figures = summary(simulate(trace(), 1, 2), {LOW: "low", NORMAL: "normal", URGENT: "urgent"})
    assert figures["jobs"] == 3 and figures["never_started"] == 0
    assert figures["makespan"] == 20
    # 2x10 + 1x5 + 2x5 GPU-seconds over 2 GPUs x 20 s.
    assert figures["gpu_utilisation"] == pytest.approx(35 / 40)
    assert figures["wait_mean"] == pytest.approx((0 + 14 + 8) / 3)
    assert list(figures["per_class"]) == ["urgent", "normal", "low"]
    assert figures["per_class"]["urgent"]["wait_p95"] == 8
    assert figures["priority_inversions"] == 0 and figures["preemptions"] == 0
    assert percentile([3, 1, 2, 4], 50) == 2 and percentile([], 95) != percentile([], 95)


def test_a_job_larger_than_every_worker_is_refused_not_waited_for():
    jobs = [TraceJob("big", gpus=8, submit=0, duration=5), TraceJob("small", 1, 1, 5)]
    result = simulate(jobs, workers=2, gpus_per_worker=4)
    assert starts(result)["small"] == (1, 6)
    assert summary(result)["never_started"] == 1


def test_an_unknown_policy_is_one_sentence():
    with pytest.raises(ValueError, match="policy must be one of fair, priority, fifo, not 'lifo'"):
        simulate(trace(), 1, 2, policy="lifo")


def write(tmp_path, text):
    path = tmp_path / "trace.csv"
    path.write_text(text)
    return str(path)


def test_the_cli_prints_the_figures_as_text_json_and_a_plot(tmp_path, capsys):
    path = write(tmp_path, "job_id,num_gpu,submit_time,duration,priority,user,ignored\n"
                           "a,2,0,10,low,ann,x\nb,1,1,5,normal,bob,y\nc,2,2,5,urgent,ann,z\n")  # fmt: skip
    assert main(["simulate", path, "--cluster", "1x2", "--plot", str(tmp_path / "t.png")]) == 0
    text = capsys.readouterr().out
    assert "policy fair on 1x2: 3 jobs" in text and "priority inversions 0" in text
    assert (tmp_path / "t.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["simulate", path, "--cluster", "1x2", "--policy", "fifo", "--json"]) == 0
    figures = json.loads(capsys.readouterr().out)
    assert figures["policy"] == "fifo" and figures["priority_inversions"] == 1
    assert set(figures["per_user"]) == {"ann", "bob"}


@pytest.mark.parametrize(
    ("text", "args", "message"),
    [
        ("job_id,num_gpu,submit_time\na,1,0\n", [], "the trace needs the column(s) duration"),
        ("job_id,num_gpu,submit_time,duration\na,1.5,0,3\n", [],
         "line 2: num_gpu must be a whole number of 0 or more, not '1.5'"),
        ("job_id,num_gpu,submit_time,duration\na,1,nan,3\n", [],
         "line 2: submit_time must be a number of seconds of 0 or more, not 'nan'"),
        ("job_id,num_gpu,submit_time,duration,priority\na,1,0,3,asap\n", [], "line 2: priority"),
        ("job_id,num_gpu,submit_time,duration\n", ["--cluster", "4"],
         "--cluster must be WORKERSxGPUS, e.g. 32x4, not '4'"),
        ("job_id,num_gpu,submit_time,duration\n", ["--cluster", "0x4"],
         "--cluster needs 1 to 100000 workers"),
    ],
)  # fmt: skip
def test_trace_and_flag_mistakes_are_one_sentence(tmp_path, capsys, text, args, message):
    assert main(["simulate", write(tmp_path, text), *args]) == 2
    error = capsys.readouterr().err
    assert message in error and error.count("\n") == 1 and "Traceback" not in error


def test_a_missing_trace_is_one_sentence(tmp_path, capsys):
    assert main(["simulate", str(tmp_path / "nope.csv")]) == 2
    assert "cannot read the trace" in capsys.readouterr().err


def test_fair_share_lets_a_small_users_job_past_another_users_sweep():
    sweep = [TraceJob(f"s{n}", 1, submit=0, duration=100, user="sweeper") for n in range(10)]
    single = TraceJob("mine", 1, submit=1, duration=100, user="small")
    by_share = starts(simulate([*sweep, single], workers=1, gpus_per_worker=2, policy="fair"))
    by_class = starts(simulate([*sweep, single], workers=1, gpus_per_worker=2, policy="priority"))
    # Two sweep jobs hold both GPUs; the small user's job takes the first GPU that frees.
    assert by_share["mine"] == (100, 200)
    assert by_class["mine"] == (500, 600)
    # A higher class still goes first: fair share only orders inside a class.
    urgent = TraceJob("urgent", 1, submit=2, duration=10, priority=URGENT, user="sweeper")
    assert starts(simulate([*sweep, single, urgent], 1, 2, "fair"))["urgent"] == (100, 110)


def preemption_trace(urgent_at):
    return [
        TraceJob("long", gpus=2, submit=0, duration=1000, priority=LOW),
        TraceJob("urgent", gpus=2, submit=urgent_at, duration=100, priority=URGENT),
    ]


RULES = PreemptionRules(priority=URGENT, min_runtime=600)


def test_an_urgent_job_preempts_and_the_victim_resumes_from_its_checkpoint():
    result = simulate(preemption_trace(700), 1, 2, preemption=RULES, checkpoint_every=300)
    # Saved at 600 of its 700 s: 400 s left when it resumes at 800.
    assert starts(result) == {"long": (0, 1200), "urgent": (700, 800)}
    assert result.preemptions == 1 and result.lost_gpu_seconds == 200
    figures = summary(result)
    assert figures["preemptions"] == 1 and figures["priority_inversions"] == 0
    # Without checkpoints it starts over.
    result = simulate(preemption_trace(700), 1, 2, preemption=RULES)
    assert starts(result) == {"long": (0, 1800), "urgent": (700, 800)}


def test_preemption_waits_for_the_minimum_run_time_and_fifo_never_preempts():
    result = simulate(preemption_trace(100), 1, 2, preemption=RULES, checkpoint_every=300)
    # Preempted at 600, just as it saved: it loses nothing and ends 100 s late.
    assert starts(result) == {"long": (0, 1100), "urgent": (600, 700)}
    assert result.lost_gpu_seconds == 0
    result = simulate(preemption_trace(100), 1, 2, "fifo", preemption=RULES)
    assert starts(result) == {"long": (0, 1000), "urgent": (1000, 1100)} and not result.preemptions


def test_a_job_with_a_timeout_backfills_without_delaying_the_held_job():
    jobs = [
        TraceJob("running", gpus=1, submit=0, duration=100, timeout=100),
        TraceJob("big", gpus=2, submit=1, duration=10, priority=URGENT),
        TraceJob("short", gpus=1, submit=2, duration=50, timeout=60),
        TraceJob("unbounded", gpus=1, submit=3, duration=5),
    ]
    result = simulate(jobs, 1, 2, "priority")
    assert starts(result) == {
        "running": (0, 100), "big": (100, 110), "short": (2, 52), "unbounded": (110, 115),
    }  # fmt: skip
    assert result.backfilled == 1 and result.inversions == 0
    # FIFO knows no backfill: short waits behind big.
    assert starts(simulate(jobs, 1, 2, "fifo"))["short"] == (110, 160)
