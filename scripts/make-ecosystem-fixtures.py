"""Writes spec/fixtures/ecosystem/: encoder checkpoints as the ecosystem ships them, and the CLS
features PyTorch computes from them, for spec/checkpoint-formats.spec.ts.

Run from the repository root:  /usr/bin/python3 scripts/make-ecosystem-fixtures.py
Needs torch; the Hugging Face files need transformers (used when importable: its ViTModel /
ViTMAEForPreTraining, saved with save_pretrained as on the hub, and their in-memory
state_dict saved with torch.save). timm itself is not importable here (its torchvision does not
match this torch), so the timm-named ViT is written below in plain torch with timm's module names
(checked against timm 1.0's vision_transformer.py: patch_embed.proj, cls_token, pos_embed,
blocks.N.{norm1, attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2}, norm, fc_norm, head; LayerNorm
eps 1e-6, exact GELU).

Files (no 'vit' metadata anywhere: the loader reads the config off the tensors):
  timm-p16-64.safetensors   timm ViT, patch 16, 64 px (4x4 grid), width 16, depth 2, mlp ratio 3,
                            learned pos_embed, token pooling with norm + head (5 classes); F32
  timm-p16-64.pth           the same weights in a training checkpoint {'model', 'optimizer',
                            'epoch', 'scaler'}: blocks as HalfStorage, head.weight non-contiguous
                            (stride (1, 5)), pos_embed a view at an offset into a larger storage
  timm-p14-56.safetensors   timm/MAE ViT, patch 14, 56 px, width 16, depth 2, mlp ratio 4, MAE's
                            fixed 2-D sin-cos pos_embed, no head; BF16
  timm-p14-56.pth           the same as MAE's pretraining checkpoints: {'model': encoder + decoder
                            + mask_token}, BFloat16Storage
  timm-p8-48-avg.safetensors timm ViT trained at 48 px (6x6 grid, patch 8), width 16, depth 1,
                            global_pool 'avg' (fc_norm + head, no final norm), learned pos_embed
  hf-vit/model.safetensors  transformers ViTForImageClassification (patch 8, 32 px, width 16,
                            2 heads, depth 2) by save_pretrained, with its config.json
  hf-vit/pytorch_model.pth  torch.save of the same model's state_dict (transformers 5 names)
  hf-vitmae/model.safetensors  ViTMAEForPreTraining (patch 8, 32 px, width 16, 4 heads, depth 2,
                            decoder), save_pretrained, config.json
  hf-vitmae/mae.pth         {'state_dict': ViTMAEModel state_dict} (no 'vit.' prefix)
  hostile.pth               torch.save of an object whose __reduce__ is os.system('touch
                            /tmp/mim-refiner-hostile-pth-ran'): must be refused, never run
  legacy.pth                a state dict in torch.save's pre-1.6 (non-zip) format
  reference.safetensors     cls.<case>: PyTorch's CLS token after the final norm [2, D] of the
                            images of `images` below (the spec computes the same formula; input.s32
                            holds one size of them to check it), pos.<case>: resampled pos_embed
All weights are rounded to values that float16 and bfloat16 hold exactly (bf16, |x| >= 1e-4 or
0), so each .pth in half precision holds the same numbers as its float32 twin.

  --check-encoder FILE  loads an encoder written by writeEncoder (timm names, 'vit' metadata)
                        into the timm-named module with strict key matching, then exits.
"""
import json
import math
import os
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

from safetensors_min import save_file

OUT = "spec/fixtures/ecosystem"
EPS = 1e-6


def images(size, batch=2):
    """Deterministic images [B, S, S, 3] NHWC, also computed by the spec (float64, then float32)."""
    b, y, x, c = torch.meshgrid(torch.arange(batch), torch.arange(size), torch.arange(size), torch.arange(3), indexing="ij")
    b, y, x, c = (t.double() for t in (b, y, x, c))
    v = torch.sin(0.31 * y + 0.17 * x + 1.3 * c + 0.7 * b) + 0.5 * torch.cos(0.05 * x * y + 0.9 * c - 0.4 * b)
    return v.float()


def sincos_2d(dim, grid):
    """MAE's get_2d_sincos_pos_embed with a zero CLS row: [1 + grid^2, dim], first half columns (w), second half rows (h)."""
    omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim / 4.0))
    gy, gx = torch.meshgrid(torch.arange(grid, dtype=torch.float64), torch.arange(grid, dtype=torch.float64), indexing="ij")

    def half(pos):
        out = pos.reshape(-1)[:, None] * omega[None]
        return torch.cat([torch.sin(out), torch.cos(out)], dim=1)

    table = torch.cat([half(gx), half(gy)], dim=1)
    return torch.cat([torch.zeros(1, dim, dtype=torch.float64), table]).float()


class Attention(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        B, N, C = x.shape
        hd = C // self.heads
        q, k, v = self.qkv(x).reshape(B, N, 3, self.heads, hd).permute(2, 0, 3, 1, 4).unbind(0)
        x = F.scaled_dot_product_attention(q, k, v)
        return self.proj(x.transpose(1, 2).reshape(B, N, C))


class Mlp(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, dim, heads, hidden):
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(dim, eps=EPS), Attention(dim, heads)
        self.norm2, self.mlp = nn.LayerNorm(dim, eps=EPS), Mlp(dim, hidden)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    def __init__(self, patch, dim):
        super().__init__()
        self.proj = nn.Conv2d(3, dim, patch, stride=patch)

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)


class TimmViT(nn.Module):
    """timm's VisionTransformer (class token, absolute pos_embed with the class position) in its names."""

    def __init__(self, img, patch, dim, depth, heads, mlp_ratio, num_classes=0, global_pool="token"):
        super().__init__()
        grid = img // patch
        self.patch_embed = PatchEmbed(patch, dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + grid * grid, dim))
        self.blocks = nn.Sequential(*[Block(dim, heads, int(dim * mlp_ratio)) for _ in range(depth)])
        use_fc_norm = global_pool == "avg"
        self.norm = nn.Identity() if use_fc_norm else nn.LayerNorm(dim, eps=EPS)
        self.fc_norm = nn.LayerNorm(dim, eps=EPS) if use_fc_norm and num_classes else nn.Identity()
        self.head = nn.Linear(dim, num_classes) if num_classes else nn.Identity()

    def tokens(self, x, pos_embed=None):
        x = self.patch_embed(x)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        return self.blocks(x + (self.pos_embed if pos_embed is None else pos_embed))

    def cls_features(self, nchw, pos_embed=None):
        """The CLS token after the final norm (fc_norm for an 'avg' model: the norm the loader takes for it)."""
        x = self.tokens(nchw, pos_embed)
        norm = self.fc_norm if isinstance(self.norm, nn.Identity) else self.norm
        return norm(x)[:, 0]


def half_exact(t):
    """Rounded to bfloat16 with |x| < 1e-4 flushed to 0: exact in float16, bfloat16 and float32."""
    t = t.to(torch.bfloat16).float()
    return torch.where(t.abs() < 1e-4, torch.zeros_like(t), t)


def randomize(model, seed, keep=()):
    """Every parameter random (biases and norms too, so none is left untested), then half_exact."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if any(k in name for k in keep):  # fixed sin-cos tables stay exact
                continue
            if p.dim() == 1 and ("norm" in name or "layernorm" in name):
                v = (1.0 if name.endswith("weight") else 0.0) + 0.3 * torch.randn(p.shape, generator=g)
            elif name.endswith("weight") and ("qkv" in name or "query" in name or "key" in name or "q_proj" in name or "k_proj" in name):
                v = 0.4 * torch.randn(p.shape, generator=g)  # peaked attention: a wrong split or order shows
            elif name.endswith("weight"):
                v = 0.25 * torch.randn(p.shape, generator=g)
            else:
                v = 0.2 * torch.randn(p.shape, generator=g)
            p.copy_(half_exact(v))


def nchw(x):
    return x.permute(0, 3, 1, 2)


def zip_is_torch_save(path):
    import zipfile
    names = zipfile.ZipFile(path).namelist()
    assert any(n.endswith("/data.pkl") for n in names), names


def timm_cases(ref):
    # A: patch 16 at 64 px, learned positions, token pooling with a head
    a = TimmViT(64, 16, 16, 2, 1, 3, num_classes=5)
    randomize(a, 10)
    sd = a.state_dict()
    save_file({k: v.contiguous() for k, v in sd.items()}, f"{OUT}/timm-p16-64.safetensors")
    pth = {k: (v.half() if k.startswith("blocks.") else v) for k, v in sd.items()}
    pth["head.weight"] = sd["head.weight"].t().contiguous().t()  # same values, stride (1, 5)
    assert not pth["head.weight"].is_contiguous()
    big = torch.cat([torch.full((7,), 3.0), sd["pos_embed"].reshape(-1)])
    pth["pos_embed"] = big[7:].view(sd["pos_embed"].shape)  # storage offset 7
    optimizer = {"state": {0: {"step": torch.tensor(12.0), "exp_avg": torch.zeros(3)}}, "param_groups": [{"lr": 1.5e-4, "params": [0], "betas": (0.9, 0.95)}]}
    torch.save({"model": pth, "optimizer": optimizer, "epoch": 7, "scaler": {"scale": 65536.0}}, f"{OUT}/timm-p16-64.pth")
    zip_is_torch_save(f"{OUT}/timm-p16-64.pth")
    x = images(64)
    with torch.no_grad():
        ref["cls.timm-p16-64"] = a.cls_features(nchw(x))

    # B: patch 14 at 56 px, MAE's fixed sin-cos positions, no head; run also at 84 px (sin-cos regenerated)
    b = TimmViT(56, 14, 16, 2, 1, 4)
    randomize(b, 11, keep=("pos_embed",))
    with torch.no_grad():
        b.pos_embed.copy_(half_exact(sincos_2d(16, 4))[None])
    sd = b.state_dict()
    save_file({k: v.to(torch.bfloat16) for k, v in sd.items()}, f"{OUT}/timm-p14-56.safetensors")
    g = torch.Generator().manual_seed(12)
    mae = {k: v.to(torch.bfloat16) for k, v in sd.items()}
    mae.update({  # MAE's pretraining checkpoint: the decoder beside the encoder
        "mask_token": torch.randn(1, 1, 8, generator=g).to(torch.bfloat16),
        "decoder_embed.weight": torch.randn(8, 16, generator=g).to(torch.bfloat16),
        "decoder_embed.bias": torch.zeros(8, dtype=torch.bfloat16),
        "decoder_pos_embed": sincos_2d(8, 4)[None].to(torch.bfloat16),
        "decoder_pred.weight": torch.randn(14 * 14 * 3, 8, generator=g).to(torch.bfloat16),
    })
    torch.save({"model": mae}, f"{OUT}/timm-p14-56.pth")
    x = images(56)
    with torch.no_grad():
        ref["cls.timm-p14-56"] = b.cls_features(nchw(x))
    x84 = images(84)
    with torch.no_grad():  # at 84 px the loader regenerates the exact table for a 6x6 grid
        ref["cls.timm-p14-56@84"] = b.cls_features(nchw(x84), pos_embed=sincos_2d(16, 6)[None])

    # C: made at 48 px (6x6 grid), run at 32 px (4x4) and 64 px (8x8): timm's resample_abs_pos_embed
    c = TimmViT(48, 8, 16, 1, 1, 2, num_classes=3, global_pool="avg")
    randomize(c, 13)
    save_file(dict(c.state_dict()), f"{OUT}/timm-p8-48-avg.safetensors")
    for size in (32, 64):
        x = images(size)
        for antialias in (True, False):
            grid = size // 8
            prefix, rest = c.pos_embed[:, :1], c.pos_embed[:, 1:]
            rest = rest.reshape(1, 6, 6, 16).permute(0, 3, 1, 2)
            rest = F.interpolate(rest, size=(grid, grid), mode="bicubic", antialias=antialias, align_corners=False)
            pos = torch.cat([prefix, rest.permute(0, 2, 3, 1).reshape(1, grid * grid, 16)], dim=1)
            with torch.no_grad():
                ref[f"cls.timm-p8-48-avg@{size}{'' if antialias else '-noaa'}"] = c.cls_features(nchw(x), pos_embed=pos)
                ref[f"pos.timm-p8-48-avg@{size}{'' if antialias else '-noaa'}"] = pos[0].detach().clone()


def hf_cases(ref):
    try:
        from transformers import ViTConfig, ViTForImageClassification, ViTMAEConfig, ViTMAEForPreTraining
        from transformers.models.vit_mae.modeling_vit_mae import build_2d_sinusoidal_position_embedding
    except ImportError:
        print("transformers is not importable: Hugging Face fixtures left as they are", file=sys.stderr)
        return
    x = images(32)
    ref["input.s32"] = x
    cfg = ViTConfig(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=48, image_size=32, patch_size=8, num_labels=4)
    vit = ViTForImageClassification(cfg).eval()
    randomize(vit, 20)
    os.makedirs(f"{OUT}/hf-vit", exist_ok=True)
    vit.save_pretrained(f"{OUT}/hf-vit", safe_serialization=True)
    torch.save(vit.state_dict(), f"{OUT}/hf-vit/pytorch_model.pth")
    with torch.no_grad():
        ref["cls.hf-vit"] = vit.vit(nchw(x)).last_hidden_state[:, 0]

    mcfg = ViTMAEConfig(hidden_size=16, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, image_size=32, patch_size=8,
                        decoder_hidden_size=8, decoder_num_hidden_layers=1, decoder_num_attention_heads=2, decoder_intermediate_size=16, mask_ratio=0.0)
    mae = ViTMAEForPreTraining(mcfg).eval()
    randomize(mae, 21, keep=("position_embeddings", "decoder_pos_embed"))
    with torch.no_grad():  # transformers' own sin-cos init (ViTMAEEmbeddings.initialize_weights: its table, halves swapped)
        table = build_2d_sinusoidal_position_embedding(height=4, width=4, embed_dim=16, cls_token=True)
        table = torch.cat([table[..., 8:], table[..., :8]], dim=-1)
        assert (table - sincos_2d(16, 4)).abs().max() < 1e-6, "transformers' ViTMAE table is MAE's"
        mae.vit.embeddings.position_embeddings.copy_(table[None])
    os.makedirs(f"{OUT}/hf-vitmae", exist_ok=True)
    mae.save_pretrained(f"{OUT}/hf-vitmae", safe_serialization=True)
    torch.save({"state_dict": mae.vit.state_dict()}, f"{OUT}/hf-vitmae/mae.pth")
    with torch.no_grad():  # mask ratio 0 and noise in order: every patch kept, in place
        noise = torch.arange(16, dtype=torch.float32).expand(2, 16)
        ref["cls.hf-vitmae"] = mae.vit(nchw(x), noise=noise).last_hidden_state[:, 0]
    for leftover in ("generation_config.json",):
        for d in ("hf-vit", "hf-vitmae"):
            if os.path.exists(f"{OUT}/{d}/{leftover}"):
                os.remove(f"{OUT}/{d}/{leftover}")


class Hostile:
    """What a malicious checkpoint holds: unpickling it in Python runs a shell command."""

    def __reduce__(self):
        return (os.system, ("touch /tmp/mim-refiner-hostile-pth-ran",))


def refusal_cases():
    torch.save({"model": {"cls_token": torch.zeros(1, 1, 4), "payload": Hostile()}}, f"{OUT}/hostile.pth")
    torch.save({"cls_token": torch.zeros(1, 1, 4)}, f"{OUT}/legacy.pth", _use_new_zipfile_serialization=False)


def check_encoder(path):
    """A writeEncoder file loads into the timm-named module with strict key matching."""
    from safetensors.torch import load_file
    from safetensors import safe_open
    cfg = json.loads(safe_open(path, "pt").metadata()["vit"])
    model = TimmViT(cfg["imgSize"], cfg["patchSize"], cfg["embedDim"], cfg["depth"], cfg["numHeads"], cfg["mlpRatio"])
    missing, unexpected = model.load_state_dict(load_file(path), strict=True)
    print(f"{path}: strict load_state_dict into the timm-named ViT: ok ({len(model.state_dict())} tensors)")


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--check-encoder":
        return check_encoder(sys.argv[2])
    os.makedirs(OUT, exist_ok=True)
    ref = {}
    timm_cases(ref)
    hf_cases(ref)
    refusal_cases()
    save_file({k: v.contiguous().float() for k, v in ref.items()}, f"{OUT}/reference.safetensors", metadata={"writer": "scripts/make-ecosystem-fixtures.py"})
    total = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(OUT) for f in fs)
    print(f"wrote {OUT}: {total / 1024:.0f} KiB; CLS feature scale {ref['cls.timm-p16-64'].abs().mean():.3f}")


if __name__ == "__main__":
    main()
