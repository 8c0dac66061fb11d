"""Benchmark modes of `python -m jaxcls.benchmark` beyond one config: jaxcls beside timm on
the same machine (`vs_timm`) and the accelerator suite (`gpu_suite`)."""
