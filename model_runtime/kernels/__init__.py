"""Hand-written GPU kernels (Triton) of the runtime. Each module here imports `triton` at the top, so
it is imported only where Triton is installed and a CUDA path needs it (see `fused_moe.py`)."""
