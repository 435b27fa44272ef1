"""Writes spec/fixtures/python-dtypes.safetensors: one tensor of every dtype models/safetensors.ts
reads, written from PyTorch tensors, for spec/safetensors.spec.ts. Each reduced-precision
tensor comes with PyTorch's own float32 conversion ("<name>.as_f32") to compare against.

Run from the repository root: /usr/bin/python3 scripts/make-safetensors-fixture.py
"""
import torch

from safetensors_min import save_file

half_values = [0.0, -0.0, 1.0, -2.0, 0.5, 65504.0, 2.0 ** -24, 2.0 ** -14, 1 / 3,
               float("inf"), float("-inf"), float("nan")]
bf16_values = [1.0, -3.14159, 1e30, -1e-30, 2.0 ** -133, float("inf"), float("nan"), 0.1]
g = torch.Generator().manual_seed(0)
f16 = torch.tensor(half_values, dtype=torch.float16)
bf16 = torch.tensor(bf16_values, dtype=torch.bfloat16)
tensors = {
    "f32": torch.arange(24, dtype=torch.float32).reshape(2, 3, 4) / 8 - 1,
    "f16": f16,
    "f16.as_f32": f16.float(),
    "bf16": bf16,
    "bf16.as_f32": bf16.float(),
    "f16_random": torch.randn(3, 5, generator=g).half(),
    "bf16_random": torch.randn(5, 3, generator=g).bfloat16(),
    "i64": torch.tensor([[0, 1, -1], [2 ** 31 - 1, -2 ** 31, 65536]], dtype=torch.int64),
    "i32": torch.tensor([7, -8, 2 ** 31 - 1], dtype=torch.int32),
    "scalar": torch.tensor(2.5),
    "empty": torch.zeros(0, 3),
}
tensors["f16_random.as_f32"] = tensors["f16_random"].float()
tensors["bf16_random.as_f32"] = tensors["bf16_random"].float()
save_file(tensors, "spec/fixtures/python-dtypes.safetensors",
          metadata={"format": "pt", "writer": "scripts/make-safetensors-fixture.py"})
