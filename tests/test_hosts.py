"""Many hosts, each with a network stack of its own, sharing one PostgreSQL queue.

Three network namespaces joined by a bridge play three machines (``netns.py``); a cluster made
for these tests listens on the bridge's address, and ``queuectl worker start`` runs on each host
against it. The tests cut a host off, restart the server, skew a host's clock, and measure
throughput and pickup latency across hosts. Root on Linux only (``.ci/run`` is): elsewhere they
skip, saying why. Every scenario gets a fresh database; whatever it started on the hosts is
killed and every link plugged back in at its end, passed or failed.

The measured figures are printed (``pytest -s``) and, if ``$QUEUECTL_HOSTS_REPORT`` names a file,
appended to it; the assertions on them are loose bounds, the README has the figures.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from helpers import DEADLINE, exit_code_within, pid_alive, queuectl_env, run_queuectl, wait_until
from netns import Host, Lab, unavailable
from test_faults_postgres import SKEW, all_jobs, assert_clean_log, configure, enqueue_all, run_counts, skewed

pytestmark = pytest.mark.slow

REPORT_ENV = "QUEUECTL_HOSTS_REPORT"
#: Each host's worker runs this many jobs at once, as the README's figures say.
COUNT = "4"


# --- the hosts, and what a test runs on them ------------------------------------------------------


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    """Three hosts and the cluster, for the whole module; removed at its end whatever happened."""
    reason = unavailable()
    if reason is not None:
        pytest.skip(reason)
    made = Lab.create(3)
    try:
        yield made
    finally:
        made.remove()


@dataclass
class Site:
    """One test's database on the lab's cluster, and the workers it started on the hosts."""

    lab: Lab
    target: str
    folder: Path
    workers: dict[str, subprocess.Popen[str]] = field(default_factory=dict)

    @property
    def hosts(self) -> list[Host]:
        return self.lab.hosts

    def start(
        self, host: Host, *args: str, env: Mapping[str, str] | None = None, quiet: bool = True
    ) -> subprocess.Popen[str]:
        """``queuectl worker start ARGS`` on ``host`` (serving also a queue named after it),
        its stderr in ``<host>.log``; its jobs see ``$TEST_HOST``."""
        serves = ("--queue", "default", "--queue", host.name)
        argv = [sys.executable, "-m", "queuectl", "worker", "start", *serves]
        argv += [*args, *(["--quiet"] if quiet else [])]
        with self.log(host).open("w") as stderr:
            process = subprocess.Popen(
                host.command(argv),
                env=queuectl_env(self.target, {"TEST_HOST": host.name, **(env or {})}),
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                text=True,
                start_new_session=True,
            )
        self.workers[host.name] = process
        return process

    def log(self, host: Host) -> Path:
        return self.folder / f"{host.name}.log"

    def registered(self) -> list[dict[str, Any]]:
        listed = run_queuectl(self.target, "worker", "list", "--json")
        assert listed.returncode == 0, listed.stderr
        workers: list[dict[str, Any]] = json.loads(listed.stdout)
        return workers

    def hosts_live(self) -> set[str]:
        """The hosts of the workers ``worker list`` shows (heartbeat younger than the lease)."""
        return {worker["host"] for worker in self.registered()}

    def show(self, job_id: str) -> dict[str, Any]:
        shown = run_queuectl(self.target, "show", job_id, "--json")
        assert shown.returncode == 0, shown.stderr
        job: dict[str, Any] = json.loads(shown.stdout)
        return job

    def stop_all(self) -> None:
        """``worker stop``: every worker exits 0."""
        done = run_queuectl(self.target, "worker", "stop")
        assert done.returncode == 0, done.stderr
        for name, process in self.workers.items():
            try:
                code = exit_code_within(process)
            except subprocess.TimeoutExpired:
                raise AssertionError(f"the worker on {name} did not stop: {self.folder / name}.log") from None
            assert code == 0, f"the worker on {name} exited {code}: {self.folder / name}.log"


@pytest.fixture
def site(lab: Lab, tmp_path: Path) -> Iterator[Site]:
    assert lab.cluster is not None
    made = Site(lab, lab.cluster.create_database(), tmp_path)
    try:
        yield made
    finally:
        lab.reset()  # kills what runs on the hosts (workers and their jobs), plugs links back
        for process in made.workers.values():
            process.wait(timeout=DEADLINE)


def report(title: str, rows: list[str]) -> None:
    """Print a measured table and append it to ``$QUEUECTL_HOSTS_REPORT`` if set."""
    text = "\n".join([title, *rows]) + "\n"
    print(f"\n{text}", end="")
    path = os.environ.get(REPORT_ENV)
    if path:
        with open(path, "a") as out:
            out.write(text)


def lines_in(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


async def _enqueue_many(target: str, jobs: list[dict[str, Any]]) -> float:
    """Enqueue ``jobs`` in one batch; the monotonic time just before the batch was sent."""
    from queuectl import Queue

    async with await Queue.open(target) as queue:
        began = time.monotonic()
        await queue.enqueue_many(jobs)
    return began


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


# --- 1. every job once ----------------------------------------------------------------------------


def test_three_hosts_drain_3000_jobs_exactly_once_while_a_fourth_process_enqueues_more(site: Site) -> None:
    runs, progress = site.folder / "runs", site.folder / "progress"
    record = f'echo "$QUEUECTL_JOB_ID $TEST_HOST" >> {runs}'
    first = [{"id": f"first-{n}", "command": record} for n in range(3000)]
    later = [[{"id": f"later-{b}-{n}", "command": record} for n in range(100)] for b in range(10)]
    enqueue_all(site.target, first)
    for host in site.hosts:
        site.start(host, "--count", COUNT)
    files = []
    for number, batch in enumerate(later):
        files.append(site.folder / f"batch-{number}.jsonl")
        files[-1].write_text("".join(json.dumps(job) + "\n" for job in batch))
    # The fourth process: ten `enqueue-file` runs one after another, each noting how many runs
    # the hosts had made by then.
    count_runs = f"cat {runs} 2>/dev/null | wc -l >> {progress}"
    each = f'"$0" -m queuectl enqueue-file "$batch" >/dev/null || exit 1; {count_runs}'
    enqueuer = subprocess.Popen(
        ["sh", "-c", f'for batch in "$@"; do {each}; done', sys.executable, *map(str, files)],
        env=queuectl_env(site.target),
    )
    expected = {str(job["id"]) for job in first} | {str(job["id"]) for batch in later for job in batch}
    assert enqueuer.wait(timeout=DEADLINE) == 0
    wait_until(lambda: len(lines_in(runs)) >= len(expected), what="every job to run")
    site.stop_all()

    ran = run_counts(runs)
    assert set(ran) == expected
    assert [job_id for job_id, times in ran.items() if times > 1] == []
    states = Counter(job["state"] for job in all_jobs(site.target))
    assert states == {"completed": len(expected)}
    hosts = Counter(line.split()[1] for line in lines_in(runs))
    assert set(hosts) == {host.name for host in site.hosts}, hosts
    # The enqueues came while the hosts were draining, not before or after.
    runs_then = [int(line) for line in lines_in(progress)]
    assert any(0 < count < len(first) for count in runs_then), runs_then


# --- 2. throughput by hosts -----------------------------------------------------------------------

#: Jobs per host in each measured batch: two to three seconds of work at the ideal rate.
JOBS_PER_HOST = 200
#: Each job sleeps this long: on two cores, sleeping jobs show what the queue allows, not the CPU.
JOB_SECONDS = 0.05


def _measure(site: Site, hosts: int) -> float:
    """jobs/s of ``JOBS_PER_HOST * hosts`` sleeping jobs, from the enqueue to the last one's end."""
    done = site.folder / f"done-{hosts}"
    total = JOBS_PER_HOST * hosts
    batch = [
        {"id": f"h{hosts}-{n}", "command": f"sleep {JOB_SECONDS:g}; echo >> {done}"} for n in range(total)
    ]
    began = asyncio.run(_enqueue_many(site.target, batch))
    wait_until(lambda: len(lines_in(done)) >= total, what=f"{total} jobs on {hosts} hosts")
    return total / (time.monotonic() - began)


def test_throughput_grows_with_hosts(site: Site) -> None:
    rates = {}
    for host in site.hosts:
        site.start(host, "--count", COUNT)
        number = len(site.workers)
        wait_until(lambda: len(site.registered()) == len(site.workers), what=f"{number} workers to register")
        rates[number] = _measure(site, number)
    site.stop_all()

    ideal = int(COUNT) / JOB_SECONDS
    report(
        f"throughput: {JOB_SECONDS * 1000:g} ms jobs, --count {COUNT} per host, {JOBS_PER_HOST} per host",
        [
            f"{hosts} host(s)  {rate:6.1f} jobs/s  ({rate / (hosts * ideal):.0%} of {hosts * ideal:g})"
            for hosts, rate in rates.items()
        ],
    )
    assert rates[2] > 1.3 * rates[1], rates
    assert rates[3] > 1.6 * rates[1], rates


# --- 3. a host cut off ----------------------------------------------------------------------------


def test_a_host_cut_off_kills_its_jobs_before_their_leases_lapse_and_its_late_reports_change_nothing(
    site: Site,
) -> None:
    lease = 4.0
    configure(site.target, lease=f"{lease:g}", poll_interval="0.2", backoff_base="1", backoff_max="0.01")
    starts, marks = site.folder / "starts", site.folder / "marks"
    marks.mkdir()
    # A first attempt writes output for five seconds (live output: writes in flight when the host
    # is cut off); a second attempt of the same job ends at once.
    command = (
        f'echo "$QUEUECTL_JOB_ID $TEST_HOST $$" >> {starts}; '
        f'[ -e {marks}/"$QUEUECTL_JOB_ID" ] && exit 0; touch {marks}/"$QUEUECTL_JOB_ID"; '
        "for tick in $(seq 25); do echo tick $tick; sleep 0.2; done"
    )
    for host in site.hosts:
        site.start(host, "--count", "2", quiet=False)
    wait_until(lambda: len(site.registered()) == 3, what="three workers to register")
    enqueue_all(site.target, [{"id": f"long-{n}", "command": command} for n in range(6)])
    wait_until(lambda: len(lines_in(starts)) == 6, what="six first attempts to start")
    first = {line.split()[0]: (line.split()[1], int(line.split()[2])) for line in lines_in(starts)}
    assert Counter(host for host, _ in first.values()) == {"host1": 2, "host2": 2, "host3": 2}

    victim = site.hosts[0]
    cut_off = {job_id: pid for job_id, (host, pid) in first.items() if host == victim.name}
    victim.cut()
    cut_at = time.monotonic()

    def killed_or_rerun() -> bool:
        return len(lines_in(starts)) > 6 or not any(pid_alive(pid) for pid in cut_off.values())

    wait_until(killed_or_rerun, what="the cut-off host to kill its jobs")
    killed_after = time.monotonic() - cut_at
    assert len(lines_in(starts)) == 6, "a job ran again while its first attempt still ran"
    # Its leases were last renewed before the cut: they lapse within `lease` of it at the latest.
    assert killed_after < lease, f"killed {killed_after:.1f}s after the cut, lease {lease:g}s"

    def rerun_elsewhere() -> bool:
        jobs = [site.show(job_id) for job_id in cut_off]
        return all(job["state"] == "completed" for job in jobs)

    wait_until(rerun_elsewhere, what="the other hosts to run the cut-off host's jobs again")
    before = {job_id: site.show(job_id) for job_id in cut_off}
    reruns = [line.split() for line in lines_in(starts)[6:]]
    assert sorted(job_id for job_id, *_ in reruns) == sorted(cut_off)
    assert {host for _, host, _ in reruns} <= {"host2", "host3"}

    victim.reconnect()
    # Back: it answers again (a job only it serves), and the server has everything it sent late.
    enqueue_all(site.target, [{"id": "back", "command": "true", "queue": victim.name}])
    wait_until(lambda: site.show("back")["state"] == "completed", what="the host to be back")
    wait_until(lambda: victim.unsent_bytes() == 0, what="the host's late writes to reach the server")
    # `worker stop` asks the workers it sees as live (see the test after this one).
    wait_until(lambda: victim.name in site.hosts_live(), what="the host's heartbeat")
    site.stop_all()

    after = {job_id: site.show(job_id) for job_id in cut_off}
    assert after == before
    for job in after.values():
        assert job["attempts"] == 2
        lost, rerun = job["history"]
        assert lost["outcome"] == "lost" and lost["host"] == victim.name, lost
        assert rerun["outcome"] == "completed" and rerun["host"] in ("host2", "host3"), rerun
    others = [site.show(job_id) for job_id in first if job_id not in cut_off]
    assert {(job["state"], job["attempts"]) for job in others} == {("completed", 1)}
    log = site.log(victim).read_text()
    for job_id in cut_off:
        assert f"killed {job_id}: its lease was lost" in log
    for host in site.hosts:
        assert_clean_log(site.log(host))


def test_worker_stop_reaches_a_host_that_is_cut_off_once_it_is_back(site: Site) -> None:
    lease = 2.0
    configure(site.target, lease=f"{lease:g}", poll_interval="0.2")
    host = site.hosts[0]
    worker = site.start(host)
    wait_until(lambda: host.name in site.hosts_live(), what="the worker to register")
    host.cut()
    try:
        wait_until(lambda: host.name not in site.hosts_live(), what="its heartbeat to go stale")
        done = run_queuectl(site.target, "worker", "stop")
        assert done.returncode == 0, done.stderr
    finally:
        host.reconnect()
    # Within a few heartbeats of its return (one a third of the lease), it must have heard.
    wait_until(lambda: worker.poll() is not None, timeout=3 * lease, what="the worker to stop")
    assert worker.returncode == 0


# --- 4. the server restarted ----------------------------------------------------------------------


def test_a_server_restart_while_three_hosts_run_loses_nothing_and_reruns_nothing_completed(
    site: Site, lab: Lab
) -> None:
    assert lab.cluster is not None
    configure(site.target, poll_interval="0.2")
    runs, long_started = site.folder / "runs", site.folder / "long-started"
    record = f'echo "$QUEUECTL_JOB_ID" >> {runs}'
    # One long job per host spans the restart; short ones complete before, during and after it.
    long_jobs: list[dict[str, Any]] = [
        {"id": f"long-{n}", "command": f"echo >> {long_started}; sleep 3; {record}", "priority": 9}
        for n in range(3)
    ]
    short_jobs = [{"id": f"short-{n}", "command": f"sleep 0.05; {record}"} for n in range(900)]
    enqueue_all(site.target, [*long_jobs, *short_jobs])
    for host in site.hosts:
        site.start(host, "--count", COUNT, "--drain", quiet=False)

    def under_way() -> bool:
        return len(lines_in(long_started)) == len(long_jobs) and len(lines_in(runs)) >= 100

    wait_until(under_way, what="the run to be under way")
    lab.cluster.restart()
    ran_before = len(lines_in(runs))
    assert ran_before < len(short_jobs), "restarted too late"
    for name, process in site.workers.items():
        assert exit_code_within(process) == 0, f"the worker on {name} failed"

    assert run_counts(runs) == Counter({str(job["id"]): 1 for job in [*long_jobs, *short_jobs]})
    jobs = all_jobs(site.target)
    assert Counter(job["state"] for job in jobs) == {"completed": len(jobs)}
    assert len(jobs) == len(long_jobs) + len(short_jobs)
    for host in site.hosts:
        assert_clean_log(site.log(host))
    assert any("PostgreSQL" in site.log(host).read_text() for host in site.hosts)  # it was noticed


# --- 5. pickup latency ----------------------------------------------------------------------------

PROBES = 50


async def _probe_pickups(target: str, folder: Path) -> list[tuple[float, str]]:
    """Enqueue a job at a time from here; each time, how long until its command ran, and where."""
    from queuectl import Queue

    picked: list[tuple[float, str]] = []
    async with await Queue.open(target) as queue:
        for number in range(PROBES):
            mark = folder / f"probe-{number}"
            command = f'echo "$(date +%s.%N) $TEST_HOST" > {mark}.tmp && mv {mark}.tmp {mark}'
            enqueued_at = time.time()
            await queue.enqueue({"id": f"probe-{number}", "command": command})
            deadline = time.monotonic() + DEADLINE
            while not mark.exists():
                assert time.monotonic() < deadline, f"probe {number} never ran"
                await asyncio.sleep(0.001)
            ran_at, host = mark.read_text().split()
            picked.append((float(ran_at) - enqueued_at, host))
    return picked


def test_pickup_latency_across_hosts_is_a_notify_not_a_poll(site: Site) -> None:
    poll_interval = 5.0  # far longer than a pickup: a probe a poll found would show
    configure(site.target, poll_interval=f"{poll_interval:g}")
    for host in site.hosts:
        site.start(host, "--count", COUNT)
    wait_until(lambda: len(site.registered()) == 3, what="three workers to register")
    picked = asyncio.run(_probe_pickups(site.target, site.folder))
    site.stop_all()

    latencies = sorted(latency for latency, _ in picked)
    median, worst = statistics.median(latencies), latencies[-1]
    hosts = Counter(host for _, host in picked)
    report(
        f"pickup latency: enqueue -> command start on a host ({PROBES} probes, 3 hosts x --count {COUNT})",
        [f"median {median * 1000:.1f} ms, max {worst * 1000:.1f} ms, by host {dict(sorted(hosts.items()))}"],
    )
    assert median < 0.1
    assert worst < poll_interval / 2, "a probe waited for a poll: its NOTIFY was missed"
    assert len(hosts) >= 2, hosts


# --- 6. a host whose clock is off -----------------------------------------------------------------


def true_time_record(path: Path) -> str:
    """A command's line in ``path``: the job's id and the true time (libfaketime taken away)."""
    return f'echo "$QUEUECTL_JOB_ID $(env -u LD_PRELOAD -u FAKETIME date +%s.%N)" >> {path}'


def ran_at(path: Path) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {}
    for line in lines_in(path):
        job_id, moment = line.split()
        times.setdefault(job_id, []).append(float(moment))
    return times


def test_a_host_five_minutes_ahead_follows_the_database_clock(site: Site, lab: Lab) -> None:
    """Schedules, leases and ``run_at`` follow the database's clock on a host whose clock is
    five minutes ahead, and so do the ``started_at`` and ``finished_at`` it records."""
    assert lab.cluster is not None
    lease = 3.0
    configure(site.target, lease=f"{lease:g}", poll_interval="0.2", backoff_base="1", backoff_max="0.01")
    right, ahead, spare = site.hosts
    runs = site.folder / "runs"
    record = true_time_record(runs)
    site.start(right, "--count", "2", quiet=False)
    site.start(ahead, "--count", "4", env=skewed(+SKEW), quiet=False)
    wait_until(lambda: len(site.registered()) == 2, what="two workers to register")

    # Leases: jobs longer than the lease, two on each host. Judged by its own clock, the host
    # ahead would take the other's jobs as lapsed at once; it must renew its own, too.
    long_jobs = [
        {"id": f"long-{host.name}-{n}", "command": f"{record}; sleep {lease * 1.5:g}", "queue": host.name}
        for host in (right, ahead)
        for n in range(2)
    ]
    enqueue_all(site.target, long_jobs)
    # run_at: due three seconds from now by the database's clock; only the host ahead serves it.
    due = lab.cluster.now() + timedelta(seconds=3)
    enqueue_all(
        site.target, [{"id": "due", "command": record, "queue": ahead.name, "run_at": due.isoformat()}]
    )
    # A schedule every 2 s whose jobs only the host ahead runs.
    added = run_queuectl(
        site.target, "schedule", "add", "tick", "--every", "2s", "-c", record, "--queue", ahead.name
    )
    assert added.returncode == 0, added.stderr

    wait_until(lambda: "due" in ran_at(runs), what="the job due in 3 s to run")
    (due_ran,) = ran_at(runs)["due"]
    assert due.timestamp() <= due_ran < due.timestamp() + 2, due_ran - due.timestamp()

    listed = run_queuectl(site.target, "schedule", "list", "--json")
    (tick,) = json.loads(listed.stdout)
    assert abs(parse_time(tick["next_run_at"]) - lab.cluster.now()) < timedelta(seconds=5), tick
    wait_until(
        lambda: len([j for j in ran_at(runs) if not j.startswith(("long", "due"))]) >= 3, what="3 ticks"
    )
    assert run_queuectl(site.target, "schedule", "remove", "tick").returncode == 0
    ticks = [
        job for job in all_jobs(site.target) if job["schedule"] == "tick" and job["state"] == "completed"
    ]
    for job in ticks:
        # Due times by the database's clock, run as they came due, two seconds apart.
        (when,) = ran_at(runs)[job["id"]]
        assert 0 <= when - parse_time(job["run_at"]).timestamp() < 2, job
    due_times = sorted(parse_time(job["run_at"]).timestamp() for job in ticks)
    assert all(abs(later - earlier - 2) < 0.5 for earlier, later in itertools.pairwise(due_times)), due_times

    wait_until(
        lambda: all(
            job["state"] == "completed" for job in all_jobs(site.target) if job["id"].startswith("long")
        ),
        what="the long jobs to complete",
    )
    longs = [job for job in all_jobs(site.target) if job["id"].startswith("long")]
    assert {(job["attempts"], job["last_error"]) for job in longs} == {(1, None)}
    assert all(len(ran_at(runs)[job["id"]]) == 1 for job in longs)
    for host in (right, ahead):
        assert "took back" not in site.log(host).read_text()

    # A lost host ahead: its jobs are taken back one lease after its last renewal by the
    # database's clock, not five minutes later.
    first, pid_file = site.folder / "first", site.folder / "pid"
    survivor = f"{record}; if [ ! -e {first} ]; then touch {first}; echo $$ > {pid_file}; exec sleep 300; fi"
    enqueue_all(site.target, [{"id": "survivor", "command": survivor, "queue": ahead.name}])
    wait_until(lambda: pid_file.exists() and pid_file.read_text().strip() != "", what="the survivor to start")
    site.workers[ahead.name].send_signal(signal.SIGKILL)
    os.kill(int(pid_file.read_text()), signal.SIGKILL)  # the whole host is gone
    lost_at = time.monotonic()
    site.start(spare, "--count", "1", "--queue", ahead.name, quiet=False)
    wait_until(
        lambda: site.show("survivor")["state"] == "completed",
        timeout=SKEW / 3,
        what="the survivor to run again",
    )
    taken_back_after = time.monotonic() - lost_at
    assert taken_back_after < 10 * lease, taken_back_after
    site.workers.pop(ahead.name).wait(timeout=DEADLINE)
    site.stop_all()
    for host in site.hosts:
        assert_clean_log(site.log(host))

    # The times the host ahead recorded are the database's: its attempts of "due" and the ticks.
    for job_id in ["due", *(job["id"] for job in ticks)]:
        job = site.show(job_id)
        (true_start,) = ran_at(runs)[job_id]
        for key in ("started_at", "finished_at"):
            off = parse_time(job[key]).timestamp() - true_start
            assert abs(off) < 3, f"{job_id} {key} is {off:+.0f}s off the database's clock"
