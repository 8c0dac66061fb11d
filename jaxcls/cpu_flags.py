"""XLA:CPU options jaxcls turns on by default, appended to XLA_FLAGS when jaxcls is imported.

XLA reads XLA_FLAGS once, when JAX starts its first backend, so `import jaxcls` (which runs
`apply()`) must come before the first JAX computation; an import after that changes nothing.
Overriding: a flag already named in XLA_FLAGS keeps the user's value, and
`JAXCLS_CPU_FLAGS=0` leaves XLA_FLAGS untouched. The flags are `xla_cpu_*` ones, read only by
the CPU compiler: GPU and TPU programs are compiled as before.

Chosen with `python -m jaxcls.benchmark --vs_timm --xla_sweep` (BENCHMARKS.md, "XLA:CPU
options"): each candidate must be faster beside timm and leave the step's numbers unchanged.
"""

import os

ENV_OPT_OUT = "JAXCLS_CPU_FLAGS"

# flag -> value. Fast math here is reassociation and contraction only: this XLA keeps
# honouring NaNs, infinities, division and exact library functions unless told otherwise
# (xla_cpu_fast_math_honor_*). 6% off the CIFAR ResNet-18 step, within the noise on
# ResNet-50, the first step's loss and gradient norm unchanged (BENCHMARKS.md).
DEFAULT_FLAGS: dict[str, str] = {"xla_cpu_enable_fast_math": "true"}


def merged(xla_flags: str, defaults: dict[str, str] = DEFAULT_FLAGS) -> str:
    """`xla_flags` with each of `defaults` appended unless that flag is already set there."""
    named = {part.split("=", 1)[0].lstrip("-") for part in xla_flags.split()}
    extra = [f"--{flag}={value}" for flag, value in defaults.items() if flag not in named]
    return " ".join([xla_flags.strip(), *extra]).strip()


def apply(environ=os.environ) -> None:
    """Sets XLA_FLAGS in `environ` to `merged(...)`, unless JAXCLS_CPU_FLAGS=0."""
    if environ.get(ENV_OPT_OUT, "1") == "0" or not DEFAULT_FLAGS:
        return
    environ["XLA_FLAGS"] = merged(environ.get("XLA_FLAGS", ""), DEFAULT_FLAGS)
