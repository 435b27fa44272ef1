"""Writes spec/fixtures/vit-parity.safetensors: a tiny timm-equivalent ViT with random weights,
an input batch, the tokens after every block, the final norm, and the gradients of a scalar
loss w.r.t. every parameter, for testing the TypeScript ViT's forward and backward.

Run from the repository root:  /usr/bin/python3 scripts/make-vit-fixture.py

Model (timm VisionTransformer layout and key names, no head): img 16, patch 4 (16 tokens + CLS),
D=32, depth 3, 2 heads, mlp ratio 4, LayerNorm eps 1e-6, exact (erf) GELU, pre-norm blocks
  x = x + attn(norm1(x));  x = x + mlp(norm2(x))
attention with fused qkv Linear(D, 3D) split as in timm:
  qkv.reshape(B, N, 3, H, hd).permute(2, 0, 3, 1, 4), scale hd^-0.5, then proj.
Patch tokens are the Conv2d output flattened row-major over (h, w); CLS is prepended, then
pos_embed [1, 1+T, D] (CLS position included) is added.

Weights (seed 0): Linear/Conv weights normal std 0.02 (timm's init) except qkv, which uses
std 0.25 so that attention is clearly non-uniform (mean row max about 0.43 against 1/17; with
0.02 the softmax is almost flat and a wrong softmax axis or head split would hide in the tolerance); biases, cls_token and
pos_embed normal std 0.1 (timm zero-inits biases, which would leave them untested);
LayerNorm weight 1 + 0.3 N(0,1), bias 0.3 N(0,1).
The reference is computed in float64 from the float32 weights and stored as float32.

Keys:
  <timm param name>          weights in PyTorch layout (Linear [out, in], conv [D, 3, p, p])
  input.images               [2, 16, 16, 3] NHWC (random normal, seed 1)
  input.grad_weights         R [2, 17, 32] (random normal, seed 2)
  output.embed               tokens entering block 0 [2, 17, 32]
  output.block{i}            tokens after block i (0-based) [2, 17, 32], no final norm
  output.final_norm          norm(tokens after the last block)
  grad.<param name>          dL/dparam for L = sum(output.final_norm * R)
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from safetensors_min import save_file

IMG, PATCH, DIM, DEPTH, HEADS, MLP_RATIO, EPS = 16, 4, 32, 3, 2, 4, 1e-6


class Attention(nn.Module):
    def __init__(self):
        super().__init__()
        self.qkv = nn.Linear(DIM, 3 * DIM)
        self.proj = nn.Linear(DIM, DIM)

    def forward(self, x):
        B, N, C = x.shape
        hd = C // HEADS
        q, k, v = self.qkv(x).reshape(B, N, 3, HEADS, hd).permute(2, 0, 3, 1, 4).unbind(0)
        attn = ((q * hd ** -0.5) @ k.transpose(-2, -1)).softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(B, N, C))


class Mlp(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(DIM, MLP_RATIO * DIM)
        self.fc2 = nn.Linear(MLP_RATIO * DIM, DIM)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x)))  # exact erf GELU


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(DIM, eps=EPS), Attention()
        self.norm2, self.mlp = nn.LayerNorm(DIM, eps=EPS), Mlp()

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = nn.Conv2d(3, DIM, PATCH, stride=PATCH)

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)  # [B, T, D], tokens row-major


class ViT(nn.Module):
    def __init__(self):
        super().__init__()
        self.patch_embed = PatchEmbed()
        self.cls_token = nn.Parameter(torch.zeros(1, 1, DIM))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + (IMG // PATCH) ** 2, DIM))
        self.blocks = nn.ModuleList(Block() for _ in range(DEPTH))
        self.norm = nn.LayerNorm(DIM, eps=EPS)

    def forward(self, images):
        x = self.patch_embed(images)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        outs = {"output.embed": x}
        for i, blk in enumerate(self.blocks):
            x = blk(x)
            outs[f"output.block{i}"] = x
        outs["output.final_norm"] = self.norm(x)
        return outs


def randomize(model):
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():  # fixed order: registration order
            if ".norm" in name or name.startswith("norm."):
                p.copy_((1.0 if name.endswith("weight") else 0.0) + 0.3 * torch.randn(p.shape, generator=g))
            elif name.endswith("weight"):
                p.copy_((0.25 if "attn.qkv" in name else 0.02) * torch.randn(p.shape, generator=g))
            else:  # biases, cls_token, pos_embed
                p.copy_(0.1 * torch.randn(p.shape, generator=g))


def main():
    model = ViT()
    randomize(model)  # float32 weights; the reference runs on their exact float64 copies
    images = torch.randn(2, 3, IMG, IMG, generator=torch.Generator().manual_seed(1))
    r = torch.randn(2, 1 + (IMG // PATCH) ** 2, DIM, generator=torch.Generator().manual_seed(2))
    weights = {k: v.detach().clone() for k, v in model.state_dict().items()}

    model.double()
    outs = model(images.double())
    loss = (outs["output.final_norm"] * r.double()).sum()
    loss.backward()

    tensors = dict(weights)
    tensors["input.images"] = images.permute(0, 2, 3, 1).contiguous()  # NHWC
    tensors["input.grad_weights"] = r
    tensors.update({k: v.detach().float() for k, v in outs.items()})
    tensors.update({f"grad.{k}": p.grad.float() for k, p in model.named_parameters()})
    meta = {"img_size": str(IMG), "patch_size": str(PATCH), "embed_dim": str(DIM), "depth": str(DEPTH),
            "num_heads": str(HEADS), "mlp_ratio": str(MLP_RATIO), "layer_norm_eps": str(EPS),
            "loss": "sum(output.final_norm * input.grad_weights)", "loss_value": repr(loss.item()),
            "writer": "scripts/make-vit-fixture.py"}
    save_file(tensors, "spec/fixtures/vit-parity.safetensors", metadata=meta)
    attn0 = model.blocks[0].attn
    with torch.no_grad():  # how peaked block 0's attention is: mean row max, well above 1/17
        x = model.blocks[0].norm1(outs["output.embed"])
        q, k, _ = attn0.qkv(x).reshape(2, -1, 3, HEADS, DIM // HEADS).permute(2, 0, 3, 1, 4).unbind(0)
        a = ((q * (DIM // HEADS) ** -0.5) @ k.transpose(-2, -1)).softmax(-1)
    print(f"wrote {len(tensors)} tensors; loss {loss.item():.6f}; block-0 attention mean row max {a.max(-1).values.mean().item():.3f} "
          f"(uniform {1 / a.shape[-1]:.3f}); final_norm std {outs['output.final_norm'].std().item():.3f}")


if __name__ == "__main__":
    main()
