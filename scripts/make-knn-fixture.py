"""Writes spec/fixtures/knn.json: weighted-kNN predictions computed with PyTorch, the reference
for eval/knn.ts (spec/eval-knn.spec.ts).

Run from the repository root:  /usr/bin/python3 scripts/make-knn-fixture.py

The rule is MIM-Refiner's kNN (ml-jku/MIM-Refiner metrics/knn.py, eval_knn_torchhub.py),
written out here from its description:
  standardise with the train set's per-dimension mean and std (torch.Tensor.std, i.e. with
  Bessel's correction) plus 1e-6, L2-normalise (F.normalize), cosine similarities, top-k,
  votes exp(sim / T) summed per class, argmax.
and the same without the standardisation (DINO's eval_knn.py). The data has a few large,
class-free dimensions with a shared offset: without standardisation they dominate the cosine,
so the two variants disagree on many rows (the spec checks that too).
Features are float32 values stored as JSON numbers (exact), so the spec needs no RNG of ours.
"""
import json
import os

import torch
import torch.nn.functional as F

torch.manual_seed(0)
CLASSES, DIM, NOISE_DIMS = 5, 16, 3
N_TRAIN, N_TEST = 300, 90


def make(n):
    y = torch.randint(0, CLASSES, (n,))
    protos = torch.Generator().manual_seed(1)
    centres = torch.randn(CLASSES, DIM, generator=protos)
    x = centres[y] + 0.9 * torch.randn(n, DIM)
    # class-free dimensions: offset 40, std 8
    x[:, :NOISE_DIMS] = 40 + 8 * torch.randn(n, NOISE_DIMS)
    return x.float(), y


def knn(train_x, train_y, test_x, k, tau, standardise):
    if standardise:
        mean = train_x.mean(dim=0, keepdim=True)
        std = train_x.std(dim=0, keepdim=True) + 1e-6
        train_x, test_x = (train_x - mean) / std, (test_x - mean) / std
    train_x, test_x = F.normalize(train_x, dim=1), F.normalize(test_x, dim=1)
    sims, idx = (test_x @ train_x.T).topk(k, dim=1)
    votes = torch.zeros(len(test_x), CLASSES, dtype=torch.float64)
    votes.scatter_add_(1, train_y[idx], (sims.double() / tau).exp())
    return votes.argmax(dim=1)


train_x, train_y = make(N_TRAIN)
test_x, test_y = make(N_TEST)
cases = []
for standardise in (True, False):
    for k in (20, 10):
        pred = knn(train_x, train_y, test_x, k, 0.07, standardise)
        cases.append({"standardise": standardise, "k": k, "temperature": 0.07, "predictions": pred.tolist(),
                      "accuracy": float((pred == test_y).double().mean())})
out = {
    "generator": f"scripts/make-knn-fixture.py (torch {torch.__version__})",
    "dim": DIM,
    "train": {"x": train_x.flatten().tolist(), "y": train_y.tolist()},
    "test": {"x": test_x.flatten().tolist(), "y": test_y.tolist()},
    "cases": cases,
}
path = os.path.join("spec", "fixtures", "knn.json")
with open(path, "w") as f:
    json.dump(out, f, separators=(",", ":"))
    f.write("\n")
for c in cases:
    print(f'standardise {c["standardise"]!s:5s} k {c["k"]:2d}: accuracy {c["accuracy"]:.4f}')
