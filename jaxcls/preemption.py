"""SIGTERM / SIGINT -> one step at which every process saves a checkpoint and stops."""

import os
import signal
import threading

import jax
import numpy as np
from jax.experimental import multihost_utils


class StopRequest:
    """`reached(step)` turns True at the same step on every process once any got a signal.

    - One process: a Python handler sets a flag, seen at the next step boundary.
    - Several processes with jax.distributed's preemption service (on by default): the
      service's own SIGTERM handler tells the coordinator, which picks the step (the largest
      step any process has reached, plus one). Asking costs a local check while no notice is
      pending. SIGINT is forwarded to it as SIGTERM.
    - Several processes without the service (`jax_enable_preemption_service=False`): at every
      `check_every`-th step (the log points, where the loop syncs anyway) the processes
      all-gather their local flags, after the step itself has finished: a second executable
      with collectives in flight beside the step's can deadlock the processes.
    """

    def __init__(self, check_every: int = 1):
        self.signal = None  # name of the signal this process got
        self.check_every = check_every
        self.previous = {}
        self.service = (jax.process_count() > 1 and jax.distributed.is_initialized()
                        and jax.config.jax_enable_preemption_service)
        if threading.current_thread() is threading.main_thread():  # signals reach only it
            # The service's SIGTERM handler must stay in place: Python's would replace it.
            signals = (signal.SIGINT,) if self.service else (signal.SIGTERM, signal.SIGINT)
            for sig in signals:
                self.previous[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum, frame):
        self.signal = signal.Signals(signum).name
        if self.service:
            os.kill(os.getpid(), signal.SIGTERM)

    def reached(self, step: int, step_outputs=None) -> bool:
        """True when the loop must save after `step` and stop. Call once per step, every
        process with the same steps; `step_outputs`: arrays the step just dispatched returns."""
        if jax.process_count() == 1:
            return self.signal is not None
        if self.service:
            if multihost_utils.reached_preemption_sync_point(step):
                self.signal = self.signal or "SIGTERM"  # maybe another process's
                return True
            return False
        if step % self.check_every:
            return False
        jax.block_until_ready(step_outputs)
        if multihost_utils.process_allgather(np.int32(self.signal is not None)).any():
            self.signal = self.signal or "another process's signal"
            return True
        return False

    def restore(self) -> None:
        """Puts the previous Python signal handlers back."""
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
