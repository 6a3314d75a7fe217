"""Runnable examples and the model zoo (`examples.zoo`) that tests and benchmarks build on."""
