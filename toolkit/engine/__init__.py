"""TensorRT engine building."""
