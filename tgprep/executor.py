"""Run shard tasks on this machine's cores, supervised: no worker can end, hang or strand the build.

An executor is run(work, tasks, progress): it calls work(task, event) for every task, somewhere, and
returns the results in completion order. work reports what it does through event(...):
  ("video", key)    starting on a video         ("frames", n)   n frames decoded (also a heartbeat)
  ("done", key)     that video is in the shard or in its failures
The executor passes every event on to progress, and adds one of its own:
  ("retry", n, line) an attempt was lost after n "done" videos; line says why (for the user to read)

Supervision (why not ProcessPoolExecutor: it cannot say which task a dead worker held, and raises
BrokenProcessPool for every task): each worker is a process with a pipe to the parent. A worker that dies
(any signal, any exit) or sends nothing for `timeout` seconds is killed and replaced, and its task runs
again. A video on which a worker has died or hung twice is handed to the next attempt as failed, with the
reason, and the shard is written without it (ShardTask.failed). Workers die with their parent.
"""

import ctypes
import faulthandler
import multiprocessing
import os
import pickle
import signal
import sys
import threading
import time
import traceback
from dataclasses import replace
from multiprocessing.connection import wait

from tgprep.errors import UserError

STRIKES = 2          # deaths or hangs on one video before it is recorded as failed
BARE_DEATHS = 3      # deaths of one task with no video to blame (between videos) before the build stops
POLL = 0.5           # seconds between checks for silent workers


class WorkerError(Exception):
    """Raised in the parent when work raised in a worker: `error` is the worker's exception."""

    def __init__(self, error: BaseException, trace: str):
        super().__init__(f"{type(error).__name__}: {error}")
        self.error, self.trace = error, trace


class Strikes:
    """Which video each death or hang is blamed on, and which videos a task's next attempt must skip.
    Shared by every executor, so that the rule is the same on one machine or many."""

    def __init__(self):
        self.count: dict[str, int] = {}

    def blame(self, task, key: str | None, reason: str):
        """The task to run again after an attempt died on video `key` (None: between videos)."""
        if key is None:
            return task
        self.count[key] = self.count.get(key, 0) + 1
        if self.count[key] < STRIKES:
            return task
        return replace(task, failed={**task.failed, key: reason})


def how_it_died(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        return f"killed by signal {-exitcode}"
    return f"exited with code {exitcode}"


class LocalExecutor:
    """Runs shard tasks on `workers` processes of this machine (0: one per core)."""

    def __init__(self, workers: int = 0, timeout: float = 300.0):
        self.workers = workers or os.cpu_count() or 1
        self.timeout = timeout

    def run(self, work, tasks: list, progress) -> list:
        pool = _Pool(work, min(self.workers, len(tasks)), self.timeout, progress)
        try:
            return pool.run(list(tasks))
        finally:
            pool.close()


class _Worker:
    """The parent's view of one worker process: its pipe, its task and the video it is on."""

    def __init__(self, context, work):
        self.conn, child = context.Pipe()
        self.process = context.Process(target=_worker_main, args=(child, work, os.getpid()), daemon=True)
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})  # until the worker ignores Ctrl-C itself
        try:
            self.process.start()
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
        child.close()
        self.task, self.video, self.done, self.seen, self.hung = None, None, 0, time.monotonic(), False

    def give(self, task) -> None:
        self.task, self.video, self.done, self.seen = task, None, 0, time.monotonic()
        self.conn.send(task)

    def kill(self) -> None:
        if self.process.is_alive():
            os.kill(self.process.pid, signal.SIGKILL)
        self.process.join()
        self.conn.close()


class _Pool:
    def __init__(self, work, size: int, timeout: float, progress):
        # fork where it is safe (Linux): workers start in milliseconds and are children of this process
        self.context = multiprocessing.get_context("fork" if sys.platform == "linux" else "spawn")
        self.work, self.size, self.timeout, self.progress = work, size, timeout, progress
        self.workers: list[_Worker] = []
        self.strikes, self.bare = Strikes(), {}

    def run(self, todo: list) -> list:
        results, total = [], len(todo)
        self.workers = [_Worker(self.context, self.work) for _ in range(self.size)]
        while len(results) < total:
            for worker in self.workers:
                if worker.task is None and todo:
                    worker.give(todo.pop(0))
            busy = [w for w in self.workers if w.task is not None]
            ready = wait([w.conn for w in busy] + [w.process.sentinel for w in busy], timeout=POLL)
            for worker in busy:
                if worker.conn in ready or worker.process.sentinel in ready:
                    results += self.receive(worker, todo)
                elif time.monotonic() - worker.seen > self.timeout:
                    worker.hung = True
                    os.kill(worker.process.pid, signal.SIGKILL)  # seen as a death on the next pass
        return results

    def receive(self, worker: _Worker, todo: list) -> list:
        """Take what a worker sent. A dead worker is replaced; the task it held goes back to the front."""
        results = self.drain(worker)
        if worker.process.is_alive() and not worker.hung:
            return results
        worker.kill()
        if worker.task is not None:
            todo.insert(0, self.blame(worker))
        self.workers[self.workers.index(worker)] = _Worker(self.context, self.work)
        return results

    def drain(self, worker: _Worker) -> list:
        try:
            while worker.conn.poll():
                kind, value = worker.conn.recv()
                worker.seen = time.monotonic()
                if kind == "result":
                    worker.task = None
                    return [value]
                if kind == "error":
                    raise WorkerError(*value)
                if kind == "video":
                    worker.video = value
                elif kind == "done":
                    worker.done += 1
                self.progress((kind, value))
        except (EOFError, OSError):
            pass  # the pipe broke: the worker is dead or dying
        return []

    def blame(self, worker: _Worker):
        """The dead worker's task, to run again (without the videos that have now failed twice)."""
        task, key = worker.task, worker.video
        how = f"silent for {self.timeout:g} s" if worker.hung else how_it_died(worker.process.exitcode)
        reason = f"timed out after {self.timeout:g} s (worker killed)" if worker.hung else f"decoder crashed ({how})"
        if key is None:
            self.bare[task.name] = self.bare.get(task.name, 0) + 1
            if self.bare[task.name] >= BARE_DEATHS:
                raise UserError(f"{task.name}: its worker died {BARE_DEATHS} times between videos, last {how}; "
                                "run the same command again to resume")
        retry = self.strikes.blame(task, key, reason)
        verdict = f"; {key} recorded as failed" if key in retry.failed else ""
        undo = worker.done - (key in retry.failed)  # the bar keeps a video that is now accounted for
        line = f"{task.name}: worker {how} on {key or 'no video'}{verdict}; writing the shard again"
        self.progress(("retry", undo, line))
        return retry

    def close(self) -> None:
        """Stop every worker now (also on error or Ctrl-C): no new shard starts, none is left running."""
        for worker in self.workers:
            worker.kill()


# -- in the worker process ------------------------------------------------------------------------------

def _worker_main(conn, work, parent: int) -> None:
    _die_with_parent(parent)
    faulthandler.disable()  # a crashed decoder is the parent's one line, not a dump of this process's stacks
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group; the parent decides
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})

    while True:
        try:
            task = conn.recv()
        except EOFError:
            return
        try:
            result = work(task, conn.send)
        except Exception as e:  # a bug or a full disk: the parent stops the build and says so
            conn.send(("error", (_picklable(e), traceback.format_exc())))
            return
        conn.send(("result", result))


def _die_with_parent(parent: int) -> None:
    """A worker must never outlive the build (it would keep the output's lock): the kernel's parent-death
    signal on Linux; elsewhere, and for a parent that died before prctl took effect, a watching thread."""
    if sys.platform == "linux":
        try:
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG = 1
        except (OSError, AttributeError):
            pass

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os.kill(os.getpid(), signal.SIGKILL)

    if os.getppid() != parent:
        os.kill(os.getpid(), signal.SIGKILL)
    threading.Thread(target=watch, daemon=True).start()


def _picklable(error: BaseException) -> BaseException:
    try:
        pickle.dumps(error)
        return error
    except Exception:
        return RuntimeError(f"{type(error).__name__}: {error}")
