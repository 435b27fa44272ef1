"""Writes spec/fixtures/nna-loss.safetensors: reference values and gradients of the
Nearest-Neighbour Alignment (NNA) loss of MIM-Refiner (arXiv 2402.10093; docs/method.md
"The NNA loss") for spec/nna-loss.spec.ts.

Run from the repository root:  /usr/bin/python3 scripts/make-nna-fixture.py

Written the plain way on purpose (explicit logits matrix with its diagonal replaced, then
F.cross_entropy), so that it checks operators/nna-loss.ts's masked single-matmul form.
B=6, P=8, 2 global + 3 local views, temperature 0.2, inputs standard normal (seed 0, not
normalised: the loss normalises). Computed in float64 from the float32 inputs, stored float32.

Keys: z.{i}, s.{i} (global views i), p.{j} (views j, globals first); for the full case
loss.{total,global,local} and grad_{total,global,local}.p.{j}; for the case without local
views (p.0, p.1 only) noloc.loss.{total,global,local} and noloc.grad_total.p.{j}.
"""
import torch
import torch.nn.functional as F

from safetensors_min import save_file

B, P, N_GLOBAL, N_LOCAL, TAU = 6, 8, 2, 3, 0.2


def pair_loss(z, s, p):
    z, s, p = F.normalize(z, dim=1), F.normalize(s, dim=1), F.normalize(p, dim=1)
    logits = z @ p.T  # negatives: projections of the other samples, not swapped
    for b in range(len(z)):
        logits[b, b] = s[b] @ p[b]  # positive: the nearest-neighbour-swapped projection
    return F.cross_entropy(logits / TAU, torch.arange(len(z)))


def nna_loss(zs, ss, ps, n_global):
    glob = [pair_loss(zs[i].detach(), ss[i].detach(), ps[j])
            for i in range(n_global) for j in range(n_global) if i != j]
    loc = [pair_loss(zs[i].detach(), ss[i].detach(), ps[j])
           for i in range(n_global) for j in range(n_global, len(ps))]
    total = sum(glob + loc) / len(glob + loc)
    mean = lambda xs: sum(xs) / len(xs) if xs else torch.zeros((), dtype=torch.float64)
    return total, mean(glob), mean(loc)


def main():
    g = torch.Generator().manual_seed(0)
    z = [torch.randn(B, P, generator=g) for _ in range(N_GLOBAL)]
    s = [torch.randn(B, P, generator=g) for _ in range(N_GLOBAL)]
    p = [torch.randn(B, P, generator=g) for _ in range(N_GLOBAL + N_LOCAL)]
    out = {f"z.{i}": t for i, t in enumerate(z)}
    out.update({f"s.{i}": t for i, t in enumerate(s)})
    out.update({f"p.{j}": t for j, t in enumerate(p)})

    def run(prefix, n_views, parts):
        ps = [t.double().requires_grad_() for t in p[:n_views]]
        losses = dict(zip(["total", "global", "local"], nna_loss([t.double() for t in z], [t.double() for t in s], ps, N_GLOBAL)))
        for name, value in losses.items():
            out[f"{prefix}loss.{name}"] = value.detach().float().reshape(())
        for name in parts:
            grads = torch.autograd.grad(losses[name], ps, retain_graph=True, allow_unused=True)
            out.update({f"{prefix}grad_{name}.p.{j}": (torch.zeros(B, P) if gr is None else gr.float())
                        for j, gr in enumerate(grads)})  # None: the global loss ignores locals
        print(prefix or "full:", {k: round(v.item(), 6) for k, v in losses.items()})

    run("", N_GLOBAL + N_LOCAL, ["total", "global", "local"])
    run("noloc.", N_GLOBAL, ["total"])
    save_file(out, "spec/fixtures/nna-loss.safetensors",
              metadata={"B": str(B), "P": str(P), "num_global": str(N_GLOBAL), "num_local": str(N_LOCAL),
                        "temperature": str(TAU), "writer": "scripts/make-nna-fixture.py"})


if __name__ == "__main__":
    main()
