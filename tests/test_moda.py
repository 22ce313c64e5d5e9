"""MoDA: the token pass, the router, the adapter pool, and routing under shuffled orders."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Sequence

import pytest
import torch

import cosam.runner as runner
from cosam.config import make_config
from cosam.data.domains import resolve_order
from cosam.data.prompts import Prompt
from cosam.errors import ConfigError
from cosam.methods import get_method
from cosam.methods.moda import MoDA
from cosam.models.registry import build_sam
from cosam.models.tiny_vit import TinyViT
from cosam.models.tokens import TokenReader, attention_blocks, capture
from cosam.models.vit import ViTEncoder

SMOKE = {
    "threads": 1,
    "data": {"train_cap": 4, "test_cap": 2, "probe_cap": 2},
    "train": {"epochs": 1, "lr": 1e-5, "cache_dtype": "float32"},
}


def tiny_vit_encoder() -> ViTEncoder:
    torch.manual_seed(0)
    return (
        ViTEncoder(
            img_size=64,
            patch_size=16,
            embed_dim=32,
            depth=3,
            num_heads=2,
            out_chans=16,
            use_rel_pos=True,
            window_size=2,
            global_attn_indexes=(1,),
        )
        .eval()
        .requires_grad_(False)
    )


def tinyvit_encoder() -> TinyViT:
    return build_sam("vit_t", image_size=64, pretrained=False).image_encoder.eval()


@pytest.mark.parametrize("make", [tinyvit_encoder, tiny_vit_encoder], ids=["tinyvit", "vit"])
def test_one_way_capture_leaves_features_unchanged_and_tokens_train(make) -> None:
    enc = make()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        emb0, int0 = enc(x)
        with capture(enc) as inputs:
            emb1, int1 = enc(x)
    assert torch.equal(emb0, emb1) and torch.equal(int0, int1)
    specs = attention_blocks(enc)
    assert len(inputs) == len(specs)
    for t, s in zip(inputs, specs):
        assert t.shape[0] == 2 and t.shape[-1] == s.dim
    reader = TokenReader(enc, n_gat=3, generator=torch.Generator().manual_seed(0))
    q = reader.query_from_inputs(inputs)
    assert q.shape == (2, reader.query_dim)
    q.square().sum().backward()
    assert reader.tokens.grad is not None
    # the assistant tokens matter: the GFT reads them
    assert reader.tokens.grad[:, 1:].abs().sum() > 0
    assert all(p.grad is None for p in enc.parameters())
    # the same tokens through the released full pass: different query, same shapes
    with torch.no_grad():
        full = reader.full_pass(enc, x)
    assert full.shape == (2, 4, reader.query_dim)
    assert not torch.allclose(full[:, 0], q.detach())


@pytest.mark.parametrize(
    "make,size",
    [(tinyvit_encoder, 64), (tinyvit_encoder, 96), (tiny_vit_encoder, 64)],
    ids=["tinyvit", "tinyvit-padded-windows", "vit-windows"],
)
def test_live_kv_capture_equals_recomputed_kv(make, size) -> None:
    """The live path reads k/v from the blocks' own (windowed, padded) qkv: same as recomputing."""
    from cosam.models.tokens import capture_kv

    enc = make()
    if isinstance(enc, ViTEncoder):
        enc.img_size = size
    x = torch.randn(2, 3, size, size)
    with torch.no_grad(), capture(enc) as inputs, capture_kv(enc) as kv:
        enc(x)
    reader = TokenReader(enc, n_gat=2, generator=torch.Generator().manual_seed(0))
    want = reader.patch_kv(inputs)
    assert len(kv) == len(want)
    for (k1, v1), (k2, v2) in zip(kv, want):
        torch.testing.assert_close(k1, k2, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(v1, v2, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(reader.read(kv), reader.read(want))


def test_one_way_read_matches_explicit_attention() -> None:
    """The GFT after one TinyViT block equals a hand-written masked attention over [tokens; patches]."""
    enc = tinyvit_encoder()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad(), capture(enc) as inputs:
        enc(x)
    reader = TokenReader(enc, n_gat=2, generator=torch.Generator().manual_seed(1))
    spec = reader.specs[0]
    blk = spec.block
    with torch.no_grad():
        kv = reader.patch_kv(inputs[:1])
        reader_specs = reader._specs
        reader._specs = reader_specs[:1]
        got = reader.read(kv)
        reader._specs = reader_specs
        t = reader.tokens
        n = inputs[0]
        seq_norm = torch.cat([blk.attn.norm(t), n], 1)
        h, d = spec.heads, spec.dim // spec.heads
        y = blk.attn.qkv(seq_norm).view(1, -1, h, 3 * d).split(d, dim=3)
        q, k, v = (z.transpose(1, 2) for z in y)
        att = (q[:, :, :3] @ k.transpose(-2, -1) * blk.attn.scale).softmax(-1) @ v
        t2 = t + blk.attn.proj(att.transpose(1, 2).reshape(1, 3, spec.dim))
        t2 = t2 + blk.mlp(t2)
    torch.testing.assert_close(got, t2, rtol=1e-4, atol=1e-5)


def test_options_are_validated_and_base_options_pass_through() -> None:
    with pytest.raises(ConfigError, match="router"):
        make_config("smoke", {"method": "sequential_moda", "method_options": {"router": "knn"}})
    cfg = make_config(
        "smoke", {"method": "sequential_moda", "method_options": {"router": "cosine"}}
    )
    model = build_sam("vit_t", image_size=64, pretrained=False)
    with pytest.raises(ConfigError, match="hq_attention"):
        get_method("sequential_moda")(
            model,
            make_config(
                "smoke", {"method": "sequential_moda", "method_options": {"hq_attention": "both"}}
            ),
        )
    m = get_method("sam_adapter_moda")(
        model,
        make_config(
            "smoke", {"method": "sam_adapter_moda", "method_options": {"adapter_ratio": 0.5}}
        ),
    )
    assert m.base.opts.adapter_ratio == 0.5 and m.needs_pixels
    assert get_method("sequential_moda")(model, cfg).opts.router == "cosine"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("moda")
    ctx = runner.Context()

    def run(method: str, order: str = "paper", seed: int = 0, **options: Any) -> Path:
        run_name = f"{method}-{order}-s{seed}" + "".join(
            f"-{k}={v}" for k, v in sorted(options.items())
        )
        if method.endswith("_moda"):
            options = {"router_epochs": 2, **options}
        cfg = make_config(
            "smoke",
            {
                **SMOKE,
                "method": method,
                "seed": seed,
                "method_options": options,
                "run_name": run_name,
                "data": {**SMOKE["data"], "order": order},
                "results_dir": str(root / "runs"),
                "cache_dir": str(root / "cache"),
            },
        )
        return runner.run(cfg, ctx=ctx)

    return run


@pytest.mark.parametrize("method", ["sequential_moda", "decoder_tuning_moda", "sam_adapter_moda"])
def test_moda_smoke_runs_write_router_and_costs(runs, method) -> None:
    path = runs(method)
    router = json.loads((path / "router.json").read_text())
    final = router["final"]
    assert final["step"] == 8 and len(final["adapters"]) == 8
    assert set(final["per_task"]) == set(final["adapters"])
    # every image of every set was routed once at the last evaluation (8 tasks x 2 + probe 2)
    assert sum(sum(c) for c in final["confusion"].values()) == 18
    assert len(router["log"]) == 8 and len(router["router_seconds"]) == 8
    assert all(len(v) == 4 for v in router["buffer"].values())  # buffer = min(10, train_cap 4)
    costs = json.loads((path / "costs.json").read_text())
    assert costs["stored_params_per_task"] > 0
    assert costs["stored_params_total"] >= 8 * costs["stored_params_per_task"]
    matrix = json.loads((path / "matrix.json").read_text())
    assert len(matrix["rows"]) == 9
    # training moved the rows (an unbroken training), so the matrix comparisons compare trained rows
    moved = max(
        abs(v - r0)
        for row in matrix["iou"][1:]
        for v, r0 in zip(row, matrix["iou"][0])
        if v is not None
    )
    assert moved >= 0.02, f"{method}: every trained row within {moved:.4f} IoU of row 0"


def test_untrained_moda_equals_zero_shot_row(runs) -> None:
    z = json.loads((runs("zeroshot") / "matrix.json").read_text())
    m = json.loads((runs("sequential_moda") / "matrix.json").read_text())
    assert m["iou"][0] == z["iou"][0]


def _domain_query(samples: Sequence[Any], dim: int) -> torch.Tensor:
    """A fixed random vector per domain (what a perfect feature extractor would give)."""
    out = []
    for s in samples:
        seed = int(hashlib.sha1(s.domain.encode()).hexdigest()[:8], 16)
        out.append(torch.randn(dim, generator=torch.Generator().manual_seed(seed)))
    return torch.stack(out) * 3.0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_routing_follows_task_identity_under_shuffled_orders(runs, monkeypatch, seed) -> None:
    """With perfectly separable queries the router is right on every image, under any order:
    its labels are adapter indices in training order, not ids hard-coded by name (§8.9)."""
    monkeypatch.setattr(
        MoDA, "queries", lambda self, samples: _domain_query(samples, self.reader.query_dim)
    )
    path = runs(
        "decoder_tuning_moda",
        order="shuffled",
        seed=seed,
        train_tokens=False,
        router_epochs=20,
        router_lr=1e-2,
    )
    order = json.loads((path / "config.json").read_text())["resolved"]["order"]
    assert order == resolve_order("shuffled", seed) and order != resolve_order("paper", seed)
    final = json.loads((path / "router.json").read_text())["final"]
    assert final["adapters"] == order
    assert final["accuracy"] == 1.0, final
    for name, counts in final["confusion"].items():
        if name in order:
            assert counts[order.index(name)] == sum(counts)


def test_reroute_reproduces_a_full_run_with_other_router_options(runs) -> None:
    """Router ablations re-route a finished pool: the rows equal a full run with those options."""
    from cosam.ablation import reroute

    base = runs("decoder_tuning_moda")
    variant = {"train_tokens": False, "router": "cosine"}
    full = runs("decoder_tuning_moda", **variant)
    ctx = runner.Context()
    got = reroute(base, variant, steps="all", ctx=ctx)
    want = json.loads((full / "matrix.json").read_text())
    assert got["matrix"]["iou"] == want["iou"] and got["matrix"]["biou"] == want["biou"]
    assert got["router_log"][-1] == json.loads((full / "router.json").read_text())["final"]
    last = reroute(base, variant, steps="last", ctx=ctx)
    assert last["summary"]["last_iou"] == pytest.approx(got["summary"]["last_iou"])
    assert (base / "ablations" / "router=cosine,train_tokens=False-all.json").exists()
    with pytest.raises(Exception, match="adapters"):
        reroute(base, {"adapter_ratio": 0.5})


def test_restrict_to_subset_scores_a_full_run_on_a_capped_runs_images(tmp_path) -> None:
    from cosam.report import load_run, restrict_to_subset

    def run(test_cap: int, probe_cap: int) -> Path:
        cfg = make_config(
            "smoke",
            {
                **SMOKE,
                "method": "zeroshot",
                "run_name": f"z{test_cap}",
                "data": {**SMOKE["data"], "test_cap": test_cap, "probe_cap": probe_cap},
                "results_dir": str(tmp_path / "runs"),
                "cache_dir": str(tmp_path / "cache"),
            },
        )
        return runner.run(cfg)

    full, sub = load_run(run(4, 4)), load_run(run(2, 1))
    got = restrict_to_subset(full, sub).matrix
    assert got.to_dict()["iou"] == sub.matrix.to_dict()["iou"]
    assert got.to_dict()["biou"] == sub.matrix.to_dict()["biou"]
    assert full.matrix.to_dict()["iou"] != sub.matrix.to_dict()["iou"]
    with pytest.raises(ValueError, match="not all in"):
        restrict_to_subset(sub, full)


def test_sam_adapter_moda_reads_dataset_queries_from_the_block_cache(runs, monkeypatch) -> None:
    """SAM-Adapter+MoDA scores dataset images without a second, frozen encoder pass: the query
    comes from the block-input cache (as the cached-feature bases route), and the routes equal
    those of the live frozen pass that new images (no samples) still take."""
    from cosam.config import Config, from_dict
    from cosam.inspect import rebuild_strategy
    from cosam.methods.moda_cache import TokenInputs

    path = runs("sam_adapter_moda")
    meta = json.loads((path / "config.json").read_text())
    cfg = from_dict(Config, {**meta["config"], "progress": False})
    ctx = runner.Context()
    strategy, bench, state = rebuild_strategy(path, cfg, ctx)
    strategy.load_method_state(state)
    strategy.eval()
    assert strategy.token_inputs.token_cache == "disk" and len(strategy.pool) == 8
    samples = [s for t in bench.tasks for s in list(t.test)[:1]]
    images = strategy.token_inputs.images(samples)
    boxes = [Prompt(kind="box", box=ctx.store.get(s).box) for s in samples]
    task_ids = torch.arange(len(samples))
    live_calls = []
    real_live = TokenInputs.live
    monkeypatch.setattr(
        TokenInputs, "live", lambda self, *a: live_calls.append(1) or real_live(self, *a)
    )
    with torch.no_grad():
        strategy._routes.clear()
        cached = strategy.predict_images(images, boxes, task_ids, samples)
        cached_routes = list(strategy._routes)
        assert live_calls == []
        strategy._routes.clear()
        live = strategy.predict_images(images, boxes, task_ids, None)
        assert live_calls == [1] and strategy._routes == cached_routes
    assert torch.allclose(cached, live, atol=1e-4)


def test_feature_pass_fills_the_block_cache_moda_reads(tmp_path, monkeypatch) -> None:
    """With ``Context(capture_blocks=True)`` the bases' feature pass also writes MoDA's block
    inputs: a MoDA run after them encodes nothing for its tokens, and its matrix equals that of
    a MoDA run that built its block cache in a pass of its own (the same bytes)."""
    from cosam.features import BlockInputCache, FeatureCache

    block_passes = []
    real = BlockInputCache._encode
    monkeypatch.setattr(
        BlockInputCache, "_encode", lambda self, x: block_passes.append(len(x)) or real(self, x)
    )

    def cfg(method: str, where: str):
        return make_config(
            "smoke",
            {
                **SMOKE,
                "method": method,
                "method_options": {"router_epochs": 2} if method.endswith("_moda") else {},
                "results_dir": str(tmp_path / where / "runs"),
                "cache_dir": str(tmp_path / where / "cache"),
            },
        )

    ctx = runner.Context(capture_blocks=True)
    runner.run(cfg("zeroshot", "a"), ctx=ctx)  # encodes the test and probe images
    runner.run(cfg("sequential", "a"), ctx=ctx)  # encodes the train images
    blocks_a = sorted((tmp_path / "a" / "cache").rglob("blocks/*/*.pt"))
    assert blocks_a, "the feature pass wrote no block-input entry"
    moda_a = runner.run(cfg("sequential_moda", "a"), ctx=ctx)
    assert block_passes == [], "the MoDA run re-encoded images the feature pass had captured"

    # as before: no capture, the MoDA run encodes every image once more for its block inputs
    monkeypatch.setattr(FeatureCache, "capture_blocks", lambda self: False)
    moda_b = runner.run(cfg("sequential_moda", "b"), ctx=runner.Context())
    assert sum(block_passes) == len(blocks_a)
    blocks_b = sorted((tmp_path / "b" / "cache").rglob("blocks/*/*.pt"))
    assert [p.name for p in blocks_b] == [p.name for p in blocks_a]
    for pa, pb in zip(blocks_a, blocks_b):
        ta = torch.load(pa, weights_only=True)["blocks"]
        tb = torch.load(pb, weights_only=True)["blocks"]
        assert len(ta) == len(tb) and all(torch.equal(x, y) for x, y in zip(ta, tb))
    read = lambda p: json.loads((p / "matrix.json").read_text())  # noqa: E731
    assert read(moda_a) == read(moda_b)


@pytest.mark.parametrize("make", [tinyvit_encoder, tiny_vit_encoder], ids=["tinyvit", "vit"])
def test_folded_query_equals_the_pass_over_patch_keys_and_values(make) -> None:
    """``query_from_inputs`` never forms the patches' keys and values; its queries and their
    gradients (to the tokens) equal the unfolded ``read(patch_kv(inputs))`` to float rounding."""
    enc = make()
    reader = TokenReader(enc, n_gat=3, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        reader.tokens.mul_(3.0)  # far from a uniform softmax
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad(), capture(enc) as inputs:
        enc(x)
    folded = reader.query_from_inputs(inputs)
    (g_folded,) = torch.autograd.grad(folded.square().sum(), reader.tokens)
    plain = reader.read(reader.patch_kv(inputs))[:, 0]
    (g_plain,) = torch.autograd.grad(plain.square().sum(), reader.tokens)
    assert folded.shape == plain.shape == (2, reader.query_dim)
    assert torch.allclose(folded, plain, rtol=1e-4, atol=1e-5 * plain.abs().max().item())
    assert torch.allclose(g_folded, g_plain, rtol=1e-3, atol=1e-5 * g_plain.abs().max().item())
    assert not torch.allclose(folded, reader.query_from_inputs([i.flip(0) for i in inputs]))


def test_router_memo_loads_the_router_another_base_trained(tmp_path, monkeypatch) -> None:
    """sequential_moda and decoder_tuning_moda of one seed and order train the same routers (the
    base plays no part): the second run loads all 7 from the memo, trains none, and its matrix
    and routes are the same bytes as a run that trains them. Other router options train anew."""
    import cosam.methods.moda as moda

    trained: list = []
    real = moda.train_router
    monkeypatch.setattr(moda, "train_router", lambda *a, **k: (trained.append(1), real(*a, **k)))

    def run(method: str, cache: str, name: str, **options: Any) -> Path:
        cfg = make_config(
            "smoke",
            {
                **SMOKE,
                "method": method,
                "method_options": {"router_epochs": 2, **options},
                "run_name": name,
                "results_dir": str(tmp_path / "runs"),
                "cache_dir": str(tmp_path / cache),
            },
        )
        trained.clear()
        path = runner.run(cfg, ctx=runner.Context())
        return path

    def read(path: Path, name: str) -> Any:
        return json.loads((path / name).read_text())

    run("sequential_moda", "c1", "first")
    assert len(trained) == 7
    assert len(list((tmp_path / "c1").rglob("routers/*.pt"))) == 7
    hit = run("decoder_tuning_moda", "c1", "hit")
    assert trained == []
    assert read(hit, "router.json")["router_reused"] == [False] + [True] * 7
    miss = run("decoder_tuning_moda", "c2", "miss")
    assert len(trained) == 7 and read(miss, "router.json")["router_reused"] == [False] * 8
    assert read(hit, "matrix.json") == read(miss, "matrix.json")
    assert read(hit, "router.json")["log"] == read(miss, "router.json")["log"]
    run("decoder_tuning_moda", "c1", "other", router_lr=1e-2)
    assert len(trained) == 7
