"""The Triton backend: fused kernel templates (pointwise, row reduction, matmul, flash
attention) generated as `@triton.jit` source, run on a GPU or in Triton's CPU interpreter,
and compiled ahead of time to PTX. Triton itself is imported only when a build needs it."""
