"""SIGTERM / SIGINT -> one step at which every process saves a checkpoint and stops, within a
bounded time even when a process is stuck."""

import os
import select
import signal
import threading
import time

import jax
import numpy as np
from absl import logging
from jax.experimental import multihost_utils


def _last_checkpoint(checkpoint_dir: str) -> str:
    steps = [int(d) for d in os.listdir(checkpoint_dir) if d.isdigit()] if os.path.isdir(
        checkpoint_dir) else []
    return os.path.join(checkpoint_dir, str(max(steps))) if steps else "none"


class StopRequest:
    """`reached(step)` turns True at the same step on every process once any got a signal.

    - One process: a Python handler sets a flag, seen at the next step boundary.
    - Several processes: at every `check_every`-th step (the log points, where the loop syncs
      anyway) the processes all-gather their flags, after the step itself has finished: a second
      executable with collectives in flight beside the step's can deadlock the processes. (jax's
      preemption service is left off, `distributed.initialize`: its C++ SIGTERM handler runs
      no Python, so nothing could bound a stopping run that is stuck.)
    - A watchdog thread wakes on the signal itself (`signal.set_wakeup_fd`: it fires even while
      the main thread waits inside XLA). If after the signal no step or eval batch finishes
      (`beat`) for `timeout_s`, it logs the last checkpoint and exits the process with status
      128 + signal number. A second signal exits at once.
    """

    def __init__(self, check_every: int = 1, timeout_s: float = 300.0,
                 checkpoint_dir: str = ""):
        self.signal = None  # name of the signal this process got
        self.check_every = check_every
        self.timeout_s = timeout_s
        self.checkpoint_dir = checkpoint_dir
        self.previous = {}
        self._last_beat = time.monotonic()
        self._done = threading.Event()
        self._wakeup = None
        if threading.current_thread() is threading.main_thread():  # signals reach only it
            for sig in (signal.SIGTERM, signal.SIGINT):
                self.previous[sig] = signal.signal(sig, self._handle)
            read, write = os.pipe()
            os.set_blocking(write, False)
            self._wakeup = (read, write, signal.set_wakeup_fd(write, warn_on_full_buffer=False))
            self._watchdog = threading.Thread(target=self._watch, args=(read,), daemon=True,
                                              name="jaxcls-stop-watchdog")
            self._watchdog.start()

    def _handle(self, signum, frame):
        self.signal = signal.Signals(signum).name

    def _watch(self, read: int) -> None:
        received = []  # signal numbers, in order
        while not self._done.is_set():
            if select.select([read], [], [], 1.0)[0] and not self._done.is_set():
                new = [b for b in os.read(read, 64) if b in (signal.SIGTERM, signal.SIGINT)]
                if new and not received:  # the timeout counts from the first signal
                    self._last_beat = time.monotonic()
                received += new
            if len(received) > 1:
                self._exit(received[-1], "a second %s: exiting at once")
            if received and time.monotonic() - self._last_beat > self.timeout_s:
                self._exit(received[0], f"%s, then no progress for {self.timeout_s:.0f} s "
                           "(config.stop_timeout_s; a process stuck in a collective?): exiting "
                           "without saving")

    def _exit(self, signum: int, why: str) -> None:
        name = signal.Signals(signum).name
        logging.error(why + "; last checkpoint: %s; rerun the same command to resume from it",
                      name, _last_checkpoint(self.checkpoint_dir))
        logging.flush()
        os._exit(128 + signum)

    def beat(self) -> None:
        """Marks progress (a finished step or eval batch) for the watchdog."""
        self._last_beat = time.monotonic()

    def reached(self, step: int, step_outputs=None) -> bool:
        """True when the loop must save after `step` and stop. Call once per step, every
        process with the same steps; `step_outputs`: arrays the step just dispatched returns."""
        self.beat()
        if jax.process_count() == 1:
            return self.signal is not None
        if step % self.check_every:
            return False
        jax.block_until_ready(step_outputs)
        if multihost_utils.process_allgather(np.int32(self.signal is not None)).any():
            self.signal = self.signal or "another process's signal"
            return True
        return False

    def restore(self) -> None:
        """Stops the watchdog and puts the previous signal handlers back."""
        self._done.set()
        if self._wakeup is not None:
            read, write, previous_fd = self._wakeup
            signal.set_wakeup_fd(previous_fd)
            os.write(write, b"\0")  # wakes the watchdog, which sees _done and returns
            self._watchdog.join()
            os.close(write)
            os.close(read)
            self._wakeup = None
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        self.previous = {}
