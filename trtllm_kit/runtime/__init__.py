"""Runners: one contract for eager PyTorch, ONNX Runtime and TensorRT."""
