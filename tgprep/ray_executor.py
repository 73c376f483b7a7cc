"""Ray as the engine past one machine: the same shard tasks, scheduled, placed and retried by Ray.

Each shard task is a Ray task (`_run_shard`). Ray retries it when its worker process or its node is lost
(max_retries). What Ray cannot know is which video killed the worker: every attempt tells a small actor
(`Attempts`) the video it is on, so the next attempt of a task whose worker died learns, from the same
rule as the local executor (tgprep.executor.Strikes), which videos to record as failed instead of decoding.
The driver polls that actor for progress (the same bar as a local build) and cancels, with
ray.cancel(force=True), an attempt that has said nothing for --timeout seconds, then submits it again.
Output goes to --out: a bucket, which each task uploads its own shard to (tgprep.build._shard_work stages it on the
task's node), or a folder every node sees (a shared file system); dataset.json is the driver's.
"""

import logging
import os
import socket
import time

import ray

from tgprep.errors import UserError
from tgprep.executor import BARE_DEATHS, POLL, STRIKES, Strikes, WorkerError


@ray.remote(num_cpus=0)
class Attempts:
    """Where each shard task's current attempt is: the video it is on, what it has done, when it last spoke."""

    def __init__(self):
        self.strikes, self.open, self.events = Strikes(), {}, []

    def begin(self, task):
        """Called by every attempt: if this task's last attempt never ended, its worker died on its video."""
        task = self.open.get(task.name, {}).get("task", task)
        if task.name in self.open:
            task = self._lost(task.name, "decoder crashed (its Ray worker died)", "Ray worker died")
        self.open[task.name] = {"task": task, "video": None, "done": 0, "seen": time.monotonic()}
        return task

    def event(self, name: str, event: tuple) -> None:
        state = self.open.get(name)
        if state is None:  # a late word from an attempt that was cancelled
            return
        state["seen"] = time.monotonic()
        if event[0] == "video":
            state["video"] = event[1]
        elif event[0] == "done":
            state["done"] += 1
        self.events.append(event)

    def end(self, name: str) -> None:
        self.open.pop(name, None)

    def hung(self, name: str, timeout: float):
        """The driver cancelled this task's silent attempt: blame its video; the task to submit again."""
        task = self._lost(name, f"timed out after {timeout:g} s (worker killed)", f"silent for {timeout:g} s")
        del self.open[name]
        return task

    def drain(self, timeout: float) -> tuple[list, list[str]]:
        """The events since the last call, and the tasks whose attempt has been silent past `timeout`."""
        events, self.events = self.events, []
        now = time.monotonic()
        return events, [name for name, state in self.open.items() if now - state["seen"] > timeout]

    def _lost(self, name: str, reason: str, how: str):
        state = self.open[name]
        task, key = state["task"], state["video"]
        retry = self.strikes.blame(task, key, reason)
        verdict = f"; {key} recorded as failed" if key in retry.failed else ""
        self.events.append(("retry", state["done"] - (key in retry.failed),
                            f"{name}: {how} on {key or 'no video'}{verdict}; writing the shard again"))
        state["task"] = retry
        return retry


@ray.remote
def _run_shard(work, task, attempts):
    task = ray.get(attempts.begin.remote(task))

    def report(event: tuple) -> None:
        sent = attempts.event.remote(task.name, event)
        if event[0] == "video":  # wait until it is heard: a crash in the next instant must be blamed on it
            ray.get(sent)

    result = work(task, report)
    ray.get(attempts.end.remote(task.name))  # after every event: an actor runs one caller's calls in order
    return result


class RayExecutor:
    """Runs shard tasks on a Ray cluster: `address` as ray.init takes it (None: RAY_ADDRESS, a cluster
    started on this machine, or else a new local one)."""

    def __init__(self, address: str | None = None, timeout: float = 300.0):
        self.address, self.timeout = address, timeout

    def run(self, work, tasks: list, progress) -> list:
        if not tasks:  # a finished build resumed: no cluster to join
            return []
        if not ray.is_initialized():
            _check_answers(self.address or os.environ.get("RAY_ADDRESS"))
            # Ray warns on every start whether token authentication is on; its defaults stand, the notice goes
            logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
            try:
                ray.init(address=self.address, logging_level=logging.WARNING)
            except (ConnectionError, RuntimeError, ValueError) as e:
                raise UserError(f"--ray-address {self.address or '(none)'}: cannot join a Ray cluster: "
                                f"{str(e).strip().splitlines()[0]}") from None
        attempts = Attempts.remote()
        pending = {self._submit(work, task, attempts): task for task in tasks}
        results = []
        try:
            while pending:
                done, _ = ray.wait(list(pending), num_returns=len(pending), timeout=POLL)
                for ref in done:
                    task = pending.pop(ref)
                    results.append(_result(ref, task))
                events, silent = ray.get(attempts.drain.remote(self.timeout))
                for event in events:
                    progress(event)
                for ref, task in [(r, t) for r, t in pending.items() if t.name in silent]:
                    ray.cancel(ref, force=True)
                    del pending[ref]
                    retry = ray.get(attempts.hung.remote(task.name, self.timeout))
                    pending[self._submit(work, retry, attempts)] = retry
        finally:
            for ref in pending:  # an error or Ctrl-C: no shard goes on without the driver
                ray.cancel(ref, force=True)
            ray.kill(attempts)
        return results

    def _submit(self, work, task, attempts):
        # enough retries for every video to fail twice, and for a few deaths between videos (a lost node)
        retries = STRIKES * len(task.records) + BARE_DEATHS
        return _run_shard.options(max_retries=retries).remote(work, task, attempts)


def _check_answers(address: str | None) -> None:
    """A host:port at which nothing answers is one line now; ray.init would try it again for minutes. Other
    forms ("auto", ray:// clients, none) are left to ray.init."""
    host, _, port = (address or "").rpartition(":")
    if not host or "://" in host or not port.isdigit():
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=5).close()
    except OSError as e:
        raise UserError(f"--ray-address {address}: nothing answers there ({e.strerror or e}); start the cluster's head "
                        "with `ray start --head` and give the address it prints, or leave the option out for a "
                        "local cluster") from None


def _result(ref, task):
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as e:  # work raised: a full disk, or a bug
        raise WorkerError(e.cause, str(e)) from None
    except ray.exceptions.RayError as e:  # Ray gave up on it
        raise UserError(f"{task.name}: Ray gave up on it ({type(e).__name__}: {str(e).strip().splitlines()[0]}); "
                        "run the same command again to resume") from None
