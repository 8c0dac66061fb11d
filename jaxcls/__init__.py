"""jaxcls: image classification in JAX/Flax."""

__version__ = "0.1.0"
