"""Stop signals at every moment of a real ``queuectl worker start``: exit 0 after a stop, never a traceback.

A SIGINT or SIGTERM may come at any moment: while the worker starts, while it idles, while a job
runs, just after ``queuectl worker stop`` (a service manager's ``kill`` after it), while the pool
winds down, while the store closes, while the interpreter exits. Whenever it comes, the worker ends
with exit 0 (130 if it came before the worker started: then no start-up line was printed) and no
traceback; never by the signal's default action (exit 143).

The signals go out at a range of offsets from a condition the test waits for (the handler being
installed, the start-up line, ``worker stop`` having returned), and in storms, one every few
milliseconds until the worker exits, which reach every phase of its shutdown. The assertion holds
for every offset; which phase an offset hits depends on the machine.
"""

from __future__ import annotations

import itertools
import re
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import ClassVar

import pytest
from helpers import DEADLINE, run_queuectl, start_worker

FAST = {"backoff_base": "1", "backoff_max": "0.01", "poll_interval": "0.05"}
STARTED = re.compile(r"^queuectl: worker \S+ started on ", re.MULTILINE)
OFFSETS = (0.0, 0.002, 0.008, 0.03, 0.1, 0.25)
STOP_SIGNALS = itertools.cycle((signal.SIGTERM, signal.SIGINT))

pytestmark = pytest.mark.slow


@pytest.fixture
def target(store_target: str) -> str:
    for key, value in FAST.items():
        assert run_queuectl(store_target, "config", "set", key, value).returncode == 0
    return store_target


@pytest.fixture(autouse=True)
def no_worker_left() -> Iterator[None]:
    """A failed test leaves no worker behind (its jobs sleep for 30 s at most)."""
    yield
    for worker in Worker.started_here:
        if worker.process.poll() is None:
            worker.process.kill()
            worker.process.wait(timeout=DEADLINE)
    Worker.started_here.clear()


class Worker:
    """One ``queuectl worker start`` process, its stderr in a file."""

    started_here: ClassVar[list[Worker]] = []

    def __init__(self, target: str, tmp_path: Path, *args: str) -> None:
        self.log = tmp_path / f"worker-{uuid.uuid4().hex[:8]}.log"
        self.process = start_worker(target, *args, stderr=self.log)
        Worker.started_here.append(self)

    @property
    def stderr(self) -> str:
        return self.log.read_text()

    def says(self, text: str) -> Callable[[], bool]:
        return lambda: text in self.stderr

    def started(self) -> bool:
        return STARTED.search(self.stderr) is not None

    def handles_sigterm(self) -> bool:
        """Whether the process has a handler for SIGTERM (from the first line of ``worker start``)."""
        try:
            status = Path(f"/proc/{self.process.pid}/status").read_text()
        except OSError:
            return False
        caught = int(re.search(r"^SigCgt:\s*([0-9a-f]+)$", status, re.MULTILINE)[1], 16)  # type: ignore[index]
        return bool(caught & (1 << (signal.SIGTERM - 1)))

    def send(self, number: signal.Signals) -> None:
        self.process.send_signal(number)  # a no-op once it has exited and been reaped

    def storm(self, every: float = 0.002) -> None:
        """Stop signals, SIGTERM and SIGINT in turn, until the process exits."""
        deadline = time.monotonic() + DEADLINE
        for number in STOP_SIGNALS:
            if self.process.poll() is not None:
                return
            assert time.monotonic() < deadline, "the worker did not exit under a storm of signals"
            self.send(number)
            time.sleep(every)

    def exit_code(self) -> int:
        code = self.process.wait(timeout=DEADLINE)
        text = self.stderr
        assert "Traceback" not in text and "internal error" not in text, text
        return code


def closely(predicate: Callable[[], bool], what: str) -> None:
    """Wait for ``predicate`` polling every millisecond, so that the offsets after it mean something."""
    deadline = time.monotonic() + DEADLINE
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.001)


def assert_stopped_or_interrupted(worker: Worker) -> None:
    """Exit 0 after a start-up line (and a ``stopping`` note), 130 when the signal came before it."""
    code = worker.exit_code()
    text = worker.stderr
    if worker.started():
        assert code == 0, text
        assert "queuectl: stopping" in text, text
    else:
        assert code == 130, text
        assert text == ""


def test_a_signal_during_start_up_interrupts_or_stops_the_worker(target: str, tmp_path: Path) -> None:
    for offset in OFFSETS:
        worker = Worker(target, tmp_path)
        closely(worker.handles_sigterm, "the stop signal handler")
        time.sleep(offset)
        worker.send(next(STOP_SIGNALS))
        assert_stopped_or_interrupted(worker)


def test_a_storm_of_signals_from_start_up_to_exit(target: str, tmp_path: Path) -> None:
    for _ in range(3):
        worker = Worker(target, tmp_path)
        closely(worker.handles_sigterm, "the stop signal handler")
        worker.storm()
        assert_stopped_or_interrupted(worker)


def test_signals_to_an_idle_worker_stop_it_with_exit_0(target: str, tmp_path: Path) -> None:
    for offset, second in itertools.product(OFFSETS, (False, True)):
        worker = Worker(target, tmp_path)
        closely(worker.started, "the start-up line")
        time.sleep(offset)
        worker.send(next(STOP_SIGNALS))
        if second:  # a second one the same time later: it ends the (empty) grace, or the exit
            time.sleep(offset)
            worker.send(next(STOP_SIGNALS))
        assert worker.exit_code() == 0, worker.stderr


def test_a_second_signal_while_a_job_runs_ends_its_grace(target: str, tmp_path: Path) -> None:
    for index, offset in enumerate(OFFSETS[::2]):
        started, queue = tmp_path / f"started-{index}", f"q{index}"  # a queue each: no job put back before
        command = f"touch {started}; sleep 30"
        enqueued = run_queuectl(target, "enqueue", "--command", command, "--queue", queue)
        assert enqueued.returncode == 0, enqueued.stderr
        worker = Worker(target, tmp_path, "--grace", "1m", "--queue", queue)
        closely(started.exists, "the job to start")
        worker.send(signal.SIGTERM)
        # Two signals of one kind sent at once may arrive as one: the second goes after the first came.
        closely(worker.says("queuectl: stopping"), "the first signal's note")
        time.sleep(offset)
        worker.send(next(STOP_SIGNALS))
        assert worker.exit_code() == 0, worker.stderr
        shown = run_queuectl(target, "show", enqueued.stdout.strip(), "--json")
        assert '"state": "pending"' in shown.stdout, shown.stdout


def test_a_storm_while_a_job_runs(target: str, tmp_path: Path) -> None:
    started = tmp_path / "started"
    assert run_queuectl(target, "enqueue", "--command", f"touch {started}; sleep 30").returncode == 0
    worker = Worker(target, tmp_path, "--grace", "1m")
    closely(started.exists, "the job to start")
    worker.storm()
    assert worker.exit_code() == 0, worker.stderr


def test_sigterm_after_worker_stop_still_exits_0(target: str, tmp_path: Path) -> None:
    """What a service manager does: ``worker stop``, then ``kill $pid; wait $pid`` a moment later."""
    for offset in (*OFFSETS, 0.4):
        worker = Worker(target, tmp_path)
        closely(worker.started, "the start-up line")
        assert run_queuectl(target, "worker", "stop").returncode == 0
        time.sleep(offset)
        worker.send(signal.SIGTERM)
        assert worker.exit_code() == 0, worker.stderr


def test_a_storm_after_worker_stop(target: str, tmp_path: Path) -> None:
    for _ in range(2):
        worker = Worker(target, tmp_path)
        closely(worker.started, "the start-up line")
        assert run_queuectl(target, "worker", "stop").returncode == 0
        worker.storm()
        assert worker.exit_code() == 0, worker.stderr


@pytest.mark.parametrize("mode", [("--burst",), ("--idle-timeout", "0.1s")], ids=["burst", "idle-timeout"])
def test_a_signal_while_a_worker_ends_by_itself(target: str, tmp_path: Path, mode: tuple[str, ...]) -> None:
    for offset in OFFSETS:
        worker = Worker(target, tmp_path, *mode)
        closely(worker.started, "the start-up line")
        time.sleep(offset)
        worker.send(next(STOP_SIGNALS))
        assert worker.exit_code() == 0, worker.stderr
