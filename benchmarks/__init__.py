"""Benchmarks against the original PyTorch SLA step (needs ``pip install -e .[bench]``)."""
