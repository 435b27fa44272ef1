"""Writes spec/fixtures/label-smoothing.json: label-smoothed cross-entropy and its gradient with
respect to the logits, computed with PyTorch, the reference for losses/label-smoothing.ts
(spec/finetune.spec.ts).

Run from the repository root:  /usr/bin/python3 scripts/make-finetune-fixture.py

torch.nn.functional.cross_entropy(logits, labels, label_smoothing=eps) (mean over the batch) at
eps 0 (plain cross-entropy), 0.1 (the MAE / BEiT fine-tuning recipe) and 0.3. Logits are float32
values stored as JSON numbers (exact), so the spec needs no RNG of ours.
"""
import json
import os

import torch
import torch.nn.functional as F

torch.manual_seed(0)
BATCH, CLASSES = 6, 10

logits = (3 * torch.randn(BATCH, CLASSES)).float()
labels = torch.randint(0, CLASSES, (BATCH,))
cases = []
for eps in (0.0, 0.1, 0.3):
    x = logits.clone().requires_grad_(True)
    loss = F.cross_entropy(x, labels, label_smoothing=eps)
    loss.backward()
    cases.append({'smoothing': eps, 'loss': loss.item(), 'grad': x.grad.tolist()})

out = os.path.join('spec', 'fixtures', 'label-smoothing.json')
with open(out, 'w') as f:
    json.dump({'torch': torch.__version__, 'logits': logits.tolist(), 'labels': labels.tolist(), 'cases': cases}, f)
print(f'wrote {out}')
