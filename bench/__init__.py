"""Benchmarks: ratios against raw baselines measured in the same run (`python -m bench`)."""
