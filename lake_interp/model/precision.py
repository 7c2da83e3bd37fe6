"""Precision names (open_clip's `precision` argument, the CLI's --precision / --dtype) and their dtypes."""

import torch

PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
PRECISION_NAMES = {dtype: name for name, dtype in PRECISIONS.items()}
