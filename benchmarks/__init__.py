"""Kiln's benchmark suite: the zoo on eager, Inductor, ONNX Runtime and Kiln (`benchmarks.run`)."""
