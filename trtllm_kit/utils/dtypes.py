"""The toolkit's dtype names and their torch types, in one place."""

import torch

TORCH_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
# Bytes of one weight in each dtype: a model's weight bytes, what a batch-1 decode step streams.
DTYPE_BYTES = {"fp32": 4, "fp16": 2, "bf16": 2}
