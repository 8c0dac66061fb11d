"""jaxcls: image classification in JAX/Flax."""

from jaxcls import cpu_flags

cpu_flags.apply()  # before any JAX backend starts: XLA reads XLA_FLAGS once

__version__ = "0.1.0"
