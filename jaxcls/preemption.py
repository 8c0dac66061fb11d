"""SIGTERM / SIGINT -> one step at which every process saves a checkpoint and stops."""

import os
import signal
import threading

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P


class StopRequest:
    """`reached(step)` turns True at the same step on every process once any got a signal.

    - One process: a Python handler sets a flag, seen at the next step boundary.
    - Several processes with jax.distributed's preemption service (on by default): the
      service's own SIGTERM handler tells the coordinator, which picks the step (the largest
      step any process has reached, plus one). Asking costs a local check while no notice is
      pending. SIGINT is forwarded to it as SIGTERM.
    - Several processes without the service (`jax_enable_preemption_service=False`): every
      step all-reduces the local flags; the result is read one step later, so the host never
      waits for the step it has just dispatched.
    """

    def __init__(self):
        self.signal = None  # name of the signal this process got
        self.previous = {}
        self.service = (jax.process_count() > 1 and jax.distributed.is_initialized()
                        and jax.config.jax_enable_preemption_service)
        if threading.current_thread() is threading.main_thread():  # signals reach only it
            # The service's SIGTERM handler must stay in place: Python's would replace it.
            signals = (signal.SIGINT,) if self.service else (signal.SIGTERM, signal.SIGINT)
            for sig in signals:
                self.previous[sig] = signal.signal(sig, self._handle)
        if jax.process_count() > 1 and not self.service:
            mesh = Mesh(np.array(jax.devices()), ("all",))
            self._sharding = NamedSharding(mesh, P("all"))
            self._any = jax.jit(jnp.max, out_shardings=NamedSharding(mesh, P()))
            self._pending = None

    def _handle(self, signum, frame):
        self.signal = signal.Signals(signum).name
        if self.service:
            os.kill(os.getpid(), signal.SIGTERM)

    def reached(self, step: int) -> bool:
        """True when the loop must save after `step` and stop. Call once per step, every
        process with the same steps."""
        if jax.process_count() == 1:
            return self.signal is not None
        if self.service:
            if multihost_utils.reached_preemption_sync_point(step):
                self.signal = self.signal or "SIGTERM"  # maybe another process's
                return True
            return False
        local = np.full(jax.local_device_count(), self.signal is not None, np.int32)
        flags = self._any(jax.make_array_from_process_local_data(self._sharding, local))
        previous, self._pending = self._pending, flags
        if previous is not None and bool(previous):
            self.signal = self.signal or "a signal to another process"
            return True
        return False

    def restore(self) -> None:
        """Puts the previous Python signal handlers back."""
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
