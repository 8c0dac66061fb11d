"""Robustness of trained classifiers: common corruptions (`corruptions`) and the benchmark
command `python -m jaxcls.robustness` (`benchmark`)."""
