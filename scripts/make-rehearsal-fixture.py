"""Writes spec/fixtures/rehearsal/: the "your own model" checkpoint of spec/dress-rehearsal.spec.ts,
a small MAE pretraining checkpoint as the MAE authors' repository saves one, and the strict
load_state_dict contract of the PyTorch encoder module it comes from.

Run from the repository root:  /usr/bin/python3 scripts/make-rehearsal-fixture.py
Needs torch (CI has none: the spec reads only the committed files).

Files:
  rehearsal.pth        torch.save({'model': state_dict}) of MAE's MaskedAutoencoderViT (models_mae.py)
                       at patch 16, 64 px (4x4 grid), width 64, depth 4, 1 head (timm's 64 channels a head), mlp ratio 4: timm's
                       encoder names (patch_embed.proj, cls_token, pos_embed, blocks.N..., norm) with
                       MAE's fixed 2-D sin-cos pos_embed, beside the decoder (mask_token, decoder_embed,
                       decoder_pos_embed, decoder_blocks.0, decoder_norm, decoder_pred) the encoder
                       leaves out. Weights as MAE's initialize_weights: xavier_uniform Linear and
                       patch projection, normal(0.02) tokens, LayerNorm 1/0, zero biases. F32.
  encoder-contract.json  the encoder module's state_dict (the timm-named ViT, no head): every key with
                       its shape and the float64 sum of its values in rehearsal.pth (a refined encoder
                       that matches these keys and shapes exactly loads with strict=True), and "cls":
                       the module's CLS token after the final norm [2, 64] of the ecosystem fixtures'
                       formula images at 64 px, from the weights in rehearsal.pth.

  --check FILE         loads FILE (a refined encoder-ema.safetensors) into the same module class with
                       load_state_dict(strict=True), prints what loaded and the CLS feature scale, exits.
"""
import importlib.util
import json
import math
import os
import sys

import torch
import torch.nn as nn

OUT = "spec/fixtures/rehearsal"
# heads: timm's presets are 64 channels a head, and a loader can only take them from the width (the
# tensors do not hold them): a model made otherwise loads with the wrong attention split
IMG, PATCH, DIM, DEPTH, MLP_RATIO = 64, 16, 64, 4, 4
HEADS = DIM // 64
DECODER_DIM, DECODER_HEADS = 32, 2

# the timm-named ViT, its blocks and MAE's sin-cos table, as the ecosystem fixtures define them
_spec = importlib.util.spec_from_file_location("ecosystem", os.path.join(os.path.dirname(os.path.abspath(__file__)), "make-ecosystem-fixtures.py"))
ecosystem = importlib.util.module_from_spec(_spec)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
_spec.loader.exec_module(ecosystem)


def encoder_module():
    """The PyTorch module a refined encoder loads back into: timm's ViT without a head."""
    return ecosystem.TimmViT(IMG, PATCH, DIM, DEPTH, HEADS, MLP_RATIO)


class MaskedAutoencoderViT(nn.Module):
    """MAE's models_mae.MaskedAutoencoderViT, its parameters and names (the forward is not needed here)."""

    def __init__(self):
        super().__init__()
        grid = IMG // PATCH
        encoder = encoder_module()
        self.patch_embed, self.cls_token, self.pos_embed = encoder.patch_embed, encoder.cls_token, encoder.pos_embed
        self.blocks, self.norm = encoder.blocks, encoder.norm
        self.decoder_embed = nn.Linear(DIM, DECODER_DIM)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, DECODER_DIM))
        self.decoder_pos_embed = nn.Parameter(torch.zeros(1, 1 + grid * grid, DECODER_DIM), requires_grad=False)
        self.decoder_blocks = nn.Sequential(ecosystem.Block(DECODER_DIM, DECODER_HEADS, DECODER_DIM * MLP_RATIO))
        self.decoder_norm = nn.LayerNorm(DECODER_DIM, eps=ecosystem.EPS)
        self.decoder_pred = nn.Linear(DECODER_DIM, PATCH * PATCH * 3)
        self.initialize_weights(grid)

    def initialize_weights(self, grid):
        """As MAE's initialize_weights (seeded by the caller)."""
        with torch.no_grad():
            self.pos_embed.copy_(ecosystem.sincos_2d(DIM, grid)[None])
            self.decoder_pos_embed.copy_(ecosystem.sincos_2d(DECODER_DIM, grid)[None])
            w = self.patch_embed.proj.weight
            nn.init.xavier_uniform_(w.view(w.shape[0], -1))
            nn.init.normal_(self.cls_token, std=0.02)
            nn.init.normal_(self.mask_token, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.zeros_(self.patch_embed.proj.bias)


MODULE = f"timm-named VisionTransformer(img_size={IMG}, patch_size={PATCH}, embed_dim={DIM}, depth={DEPTH}, num_heads={HEADS}, mlp_ratio={MLP_RATIO}, num_classes=0)"


def write_contract(file, encoder):
    """One key a line, so a diff of the contract reads as a diff of the module."""
    with torch.no_grad():
        cls = encoder.cls_features(ecosystem.nchw(ecosystem.images(IMG)))
    keys = [f' {json.dumps(k)}: {{"shape": {json.dumps(list(v.shape))}, "sum": {float(v.double().sum())!r}}}' for k, v in encoder.state_dict().items()]
    rows = [f'  {json.dumps([round(float(x), 7) for x in row])}' for row in cls]
    with open(file, "w") as f:
        f.write(f'{{"writer": "scripts/make-rehearsal-fixture.py",\n"module": {json.dumps(MODULE)},\n"keys": {{\n')
        f.write(",\n".join(keys) + '\n},\n"cls": [\n' + ",\n".join(rows) + "\n]}\n")
    json.load(open(file))  # well-formed


def write():
    os.makedirs(OUT, exist_ok=True)
    torch.manual_seed(30)
    mae = MaskedAutoencoderViT()
    state = mae.state_dict()
    torch.save({"model": state}, f"{OUT}/rehearsal.pth")
    ecosystem.zip_is_torch_save(f"{OUT}/rehearsal.pth")
    # the encoder module takes exactly the encoder's part of the MAE checkpoint
    encoder = encoder_module()
    encoder_keys = set(encoder.state_dict())
    encoder.load_state_dict({k: v for k, v in state.items() if k in encoder_keys}, strict=True)
    leftover = sorted(set(state) - encoder_keys)
    assert all(k.startswith(("decoder", "mask_token")) for k in leftover), leftover
    write_contract(f"{OUT}/encoder-contract.json", encoder)
    size = os.path.getsize(f"{OUT}/rehearsal.pth")
    print(f"wrote {OUT}: rehearsal.pth {size / 1024:.0f} KiB ({len(state)} tensors, {len(leftover)} of them the decoder), "
          f"encoder-contract.json ({len(encoder_keys)} keys)")


def check(path):
    """The refined encoder loads into the PyTorch module with strict key matching."""
    from safetensors import safe_open
    from safetensors.torch import load_file
    metadata = safe_open(path, "pt").metadata() or {}
    tensors = load_file(path)
    model = encoder_module()
    result = model.load_state_dict(tensors, strict=True)  # raises on any missing or unexpected key or shape
    print(f"{path}: load_state_dict(strict=True) into {MODULE}: {result}")
    print(f"  {len(tensors)} tensors, {sum(t.numel() for t in tensors.values())} values; metadata vit = {metadata.get('vit')}")
    x = ecosystem.nchw(ecosystem.images(IMG))
    with torch.no_grad():
        cls = model.cls_features(x)
    print(f"  CLS features of 2 images: shape {tuple(cls.shape)}, mean |x| {cls.abs().mean():.4f}, finite {bool(torch.isfinite(cls).all())}")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--check":
        check(sys.argv[2])
    elif len(sys.argv) == 1:
        write()
    else:
        sys.exit(__doc__)
