"""trtllm-kit: dense and pruned LLaMA models from PyTorch to TensorRT engines, with benchmarks."""

__version__ = "0.1.0"
