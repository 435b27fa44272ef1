"""Writes spec/fixtures/mimco-loss.json: reference values and gradients of MimCo's
reconstruction loss (arXiv 2209.03063; docs/method.md "MimCo") for
spec/mimco-loss.spec.ts.

Run from the repository root:  /usr/bin/python3 scripts/make-mimco-fixture.py

Written the plain way on purpose (one cross-entropy per masked patch over the T positions of
its own image, then one over the batch for the global features), so that it checks
operators/mimco-loss.ts's batched form. Inputs standard normal (seed 0, not normalised: the
loss normalises), a mask with a different number of masked patches per sample; computed in
float64 from the float32 inputs. Two cases: tau 0.2 (the default) and tau 0.05.

Each case: B, T, P, temperature; inputs studentPatches [B,T,P], teacherPatches [B,T,P],
mask [B,T], studentGlobal [B,P], teacherGlobal [B,P] (flat, row-major); loss.{total,patch,
image}; grad_total.{studentPatches,studentGlobal}.
"""
import json
import os

import torch
import torch.nn.functional as F

B, T, P = 3, 5, 6
MASK = [[1, 0, 1, 0, 0],
        [0, 1, 1, 1, 0],
        [0, 0, 0, 0, 1]]


def mimco_loss(s, t, mask, g, h, tau):
    per_patch = []
    for b in range(B):
        keys = F.normalize(t[b], dim=-1)  # negatives: the teacher's other patches of this image
        for i in range(T):
            if mask[b][i]:
                logits = F.normalize(s[b, i], dim=-1) @ keys.T / tau
                per_patch.append(F.cross_entropy(logits[None], torch.tensor([i])))
    patch = torch.stack(per_patch).mean()
    logits = F.normalize(g, dim=-1) @ F.normalize(h, dim=-1).T / tau
    image = F.cross_entropy(logits, torch.arange(B))
    return {"total": patch + image, "patch": patch, "image": image}


def flat(x):
    return [float(v) for v in x.detach().reshape(-1).tolist()]


def main():
    g = torch.Generator().manual_seed(0)
    inputs = {
        "studentPatches": torch.randn(B, T, P, generator=g),
        "teacherPatches": 3 * torch.randn(B, T, P, generator=g),
        "studentGlobal": torch.randn(B, P, generator=g),
        "teacherGlobal": 0.5 * torch.randn(B, P, generator=g),
    }
    cases = []
    for tau in (0.2, 0.05):
        s = inputs["studentPatches"].double().requires_grad_()
        sg = inputs["studentGlobal"].double().requires_grad_()
        losses = mimco_loss(s, inputs["teacherPatches"].double(), MASK, sg, inputs["teacherGlobal"].double(), tau)
        ds, dg = torch.autograd.grad(losses["total"], [s, sg])
        cases.append({
            "B": B, "T": T, "P": P, "temperature": tau,
            **{k: flat(v) for k, v in inputs.items()},
            "mask": [float(v) for row in MASK for v in row],
            "loss": {k: v.item() for k, v in losses.items()},
            "grad_total": {"studentPatches": flat(ds), "studentGlobal": flat(dg)},
        })
        print(f"tau {tau}:", {k: round(v.item(), 6) for k, v in losses.items()})
    path = os.path.join("spec", "fixtures", "mimco-loss.json")
    with open(path, "w") as f:
        json.dump({"writer": f"scripts/make-mimco-fixture.py (torch {torch.__version__})", "cases": cases}, f, separators=(",", ":"))
    print("wrote", path)


if __name__ == "__main__":
    main()
