"""fastsnn's benchmarks (run from the repository root: ``python -m bench.<name>`` or ``pytest bench/``)."""
