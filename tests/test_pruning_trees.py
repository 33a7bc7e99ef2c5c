"""Pruning trees: hand-built graphs, identity patching, head / GQA trees, end to end on five families and a CNN."""

from __future__ import annotations

import json

import pytest
import torch
from families import CharTokenizer, logits, make_model
from torch import nn

import hf_prune
from hf_prune import CalibrationConfig, PruningTreeConfig, prune
from hf_prune.arch.trees import DEFAULT_OPERATION_TYPES, DEFAULT_TRANSFORM_TYPES, tree_defaults
from hf_prune.methods.pruning_trees import load_pruned_module, prune_module_trees, save_pruned_module
from hf_prune.surgery.pruning_trees import (
    PatchedGatedMLP,
    TreeIdentity,
    TreeOptions,
    apply_plan,
    enumerate_trees,
    read_tree_record,
)

pytest.importorskip("torch_pruning")

CALIB = CalibrationConfig(
    dataset=[f"calibration text number {i} with some words " * 5 for i in range(20)],
    nsamples=4,
    seqlen=16,
    batch_size=2,
)
PLAIN = TreeOptions(DEFAULT_TRANSFORM_TYPES, DEFAULT_OPERATION_TYPES)


def _opts(model: nn.Module) -> TreeOptions:
    d = tree_defaults(hf_prune.arch.get_arch(model).family)
    return TreeOptions(
        d.transform_types,
        d.operation_types,
        d.attention_types,
        d.mha_projection_names,
        d.exclude_keywords,
        d.attention_noop,
    )


def _trees(model, inputs):
    return {
        t.key: t
        for t in enumerate_trees(
            model, _opts(model), inputs, output_transform=lambda o: o.logits, arch_model=model
        )
    }


# ------------------------------------------------------------------------------- hand-built graphs
def test_wide_linear_as_identity_prunes_exactly_the_next_layers_columns():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2048, 4096), nn.ReLU(), nn.Linear(4096, 2048)).eval()
    trees = {t.root: t for t in enumerate_trees(model, PLAIN, torch.randn(1, 2048))}
    tree = trees["0"]
    slices = {(path, side): idx for path, side, idx in tree.plan["slices"]}
    assert set(slices) == {("0", "out"), ("2", "in")}
    assert len(slices[("2", "in")]) == 2048 and slices[("2", "in")] == slices[("0", "out")]
    assert tree.plan["identity"] == ["0", "1"]  # the ReLU only served the root: its operation subtree
    # The columns removed are the least important by the group's L2 norm.
    norms = model[0].weight.pow(2).sum(1) + model[0].bias.pow(2) + model[2].weight.pow(2).sum(0)
    assert sorted(slices[("2", "in")]) == sorted(torch.argsort(norms)[:2048].tolist())
    apply_plan(model, tree.plan)
    assert isinstance(model[0], TreeIdentity) and isinstance(model[1], TreeIdentity)
    assert model[2].in_features == 2048 and model[2].weight.shape == (2048, 2048)
    x = torch.randn(3, 2048)
    assert torch.allclose(model(x), model[2](x))


def test_gated_mlp_with_both_branches_removed_is_patched_to_identity():
    model, fam = make_model("llama")
    mlp_path = "model.layers.1.mlp"
    for root in ("gate_proj", "up_proj"):
        apply_plan(model, _trees(model, fam.inputs)[f"transform:{mlp_path}.{root}"].plan)
    mlp = model.get_submodule(mlp_path)
    assert isinstance(mlp, PatchedGatedMLP)  # down(x * x) folded to down(x)
    x = torch.randn(2, 5, 32)
    assert torch.equal(mlp(x), mlp.down_proj(x))
    apply_plan(model, _trees(model, fam.inputs)[f"transform:{mlp_path}.down_proj"].plan)
    assert isinstance(model.get_submodule(mlp_path), TreeIdentity)
    assert logits(model, fam.inputs).shape == (2, 12, 96)


def test_head_tree_removes_exactly_one_head():
    model, fam = make_model("bert")  # 4 heads of 8 dims, no GQA
    tree = _trees(model, fam.inputs)["head:bert.encoder.layer.2.attention.self:1"]
    attn = model.bert.encoder.layer[2].attention
    q_before = attn.self.query.weight.detach().clone()
    o_before = attn.output.dense.weight.detach().clone()
    apply_plan(model, tree.plan)
    keep = [*range(0, 8), *range(16, 32)]
    for name in ("query", "key", "value"):
        assert getattr(attn.self, name).weight.shape == (24, 32)
    assert torch.equal(attn.self.query.weight, q_before[keep])
    assert torch.equal(attn.output.dense.weight, o_before[:, keep])
    assert logits(model, fam.inputs).shape == (2, 3)


def test_gqa_group_moves_as_a_whole():
    model, fam = make_model("llama")  # 4 query heads over 2 KV heads, head_dim 8
    trees = _trees(model, fam.inputs)
    heads = [k for k in trees if k.startswith("head:model.layers.0.")]
    assert heads == ["head:model.layers.0.self_attn:group0", "head:model.layers.0.self_attn:group1"]
    attn = model.model.layers[0].self_attn
    apply_plan(model, trees["head:model.layers.0.self_attn:group1"].plan)
    assert attn.q_proj.weight.shape == (16, 32) and attn.o_proj.weight.shape == (32, 16)
    assert attn.k_proj.weight.shape == (8, 32) and attn.v_proj.weight.shape == (8, 32)
    assert logits(model, fam.inputs).shape == (2, 12, 96)


def test_attention_tree_is_a_no_op_sub_block():
    model, fam = make_model("llama")
    tree = _trees(model, fam.inputs)["attention:model.layers.0.self_attn"]
    assert tree.plan["identity"] == ["model.layers.0.input_layernorm"]
    layer = model.model.layers[0]
    apply_plan(model, tree.plan)
    h = torch.randn(1, 4, 32)
    # Attention adds zeros: the block is its MLP sub-block only.
    expected = h + layer.mlp(layer.post_attention_layernorm(h))
    pos = model.model.rotary_emb(h, torch.arange(4)[None])
    assert torch.allclose(layer(h, position_embeddings=pos, attention_mask=None), expected, atol=1e-6)


# ----------------------------------------------------------------------------------- end to end
@pytest.mark.parametrize("family", ["llama", "opt", "gpt2", "bert", "vit"])
def test_end_to_end_save_reload_equal_outputs(family, tmp_path):
    model, fam = make_model(family)
    cfg = PruningTreeConfig(target=0.3, importance="magnitude", latency_repeats=1)
    pm = prune(model, cfg, progress=False)
    info = pm.report.extra["pruning_trees"]
    assert info["params_removed"] >= 0.3 * info["params_before"]
    assert pm.report.speed["baseline_ms"] > 0 and pm.report.speed["pruned_ms"] > 0
    out = pm(**fam.inputs).logits
    folder = pm.save_pretrained(tmp_path / family)
    record = json.loads((folder / "pruning_config.json").read_text())["structure"]
    assert len(record["pruning_trees"]["plans"]) == len(info["removed"])
    again = getattr(hf_prune, fam.pruned_auto).from_pretrained(folder)
    assert torch.equal(again(**fam.inputs).logits, out)
    with pytest.raises(ValueError, match="hf_prune_trees"):  # plain transformers refuses, never loads wrong
        fam.auto.from_pretrained(folder)
    card = (folder / "README.md").read_text()
    assert "fine-grained depth (pruning trees)" in card and "## Pruning trees" in card
    first = next(r for r in info["ranking"] if r["key"] == info["removed"][0])
    assert f"`{first['root']}`" in card


def test_loss_importance_ranks_and_csv_is_reproducible(tmp_path):
    paths = []
    for run in range(2):
        model, fam = make_model("llama")
        path = tmp_path / f"rank{run}.csv"
        cfg = PruningTreeConfig(target=0.2, ranking_csv=str(path), latency_repeats=1)
        pm = prune(model, cfg, calibration=CALIB, tokenizer=CharTokenizer(), progress=False)
        paths.append(path)
    rows = paths[0].read_text().splitlines()
    assert rows[0] == "rank,root,kind,params,importance,removed,key"
    assert paths[0].read_text() == paths[1].read_text()
    ranking = pm.report.extra["pruning_trees"]["ranking"]
    assert len(rows) == len(ranking) + 1
    assert [r["importance"] for r in ranking] == sorted(r["importance"] for r in ranking)
    # The first tree removed is the least important one.
    assert pm.report.extra["pruning_trees"]["removed"][0] == ranking[0]["key"]
    assert {r["kind"] for r in ranking} == {"transform", "attention", "head"}


class _Block(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv1, self.bn1, self.relu1 = nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU()
        self.conv2, self.bn2, self.relu2 = nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu2(x + self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x))))))


class TinyCNN(nn.Module):
    """Conv + BN + ReLU residual stages, a widening 1x1 and a linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.stage1 = nn.Sequential(_Block(8), _Block(8))
        self.widen = nn.Conv2d(8, 16, 1)
        self.widen_bn = nn.BatchNorm2d(16)
        self.stage2 = nn.Sequential(_Block(16))
        self.head = nn.Linear(16, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stage2(self.widen_bn(self.widen(self.stage1(self.stem(x)))))
        return self.head(h.mean((2, 3)))


def _cnn() -> TinyCNN:
    torch.manual_seed(0)
    model = TinyCNN()
    with torch.no_grad():  # non-trivial BN statistics so the reload check sees them
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return model.eval()


def test_plain_cnn_prune_save_reload(tmp_path):
    model = _cnn()
    x = torch.randn(2, 3, 8, 8)
    calib = [torch.randn(2, 3, 8, 8) for _ in range(2)]
    cfg = PruningTreeConfig(target=0.3, exclude_keywords=["stem", "head"], latency_repeats=1)
    result = prune_module_trees(model, cfg, x, calibration=calib)
    assert result.params_removed >= 0.3 * result.params_before
    kinds = {r["kind"] for r in result.ranking}
    assert kinds == {"transform"}
    roots = {r["root"] for r in result.ranking}
    assert "stem" not in roots and "head" not in roots
    # The widening 1x1 conv couples the whole second stage and the head: excluding the head forbids it ...
    assert "widen" not in roots
    # ... and allowing the head makes it a tree that narrows the stage back to 8 channels everywhere.
    opts = TreeOptions(DEFAULT_TRANSFORM_TYPES, DEFAULT_OPERATION_TYPES, exclude_keywords=("stem",))
    widen = {t.root: t for t in enumerate_trees(_cnn(), opts, x)}["widen"]
    sides = {(p, s) for p, s, idx in widen.plan["slices"] if len(idx) == 8}
    assert {("widen", "out"), ("widen_bn", "out"), ("stage2.0.conv1", "in"), ("stage2.0.bn2", "out")} <= sides
    assert ("head", "in") in sides
    # A removed conv takes its BN and ReLU along (its operation subtree).
    rec = read_tree_record(model)
    conv_plans = [p for p in rec["plans"] if p["root"].endswith("conv1")]
    for p in conv_plans:
        assert p["identity"] == [p["root"], p["root"][:-5] + "bn1", p["root"][:-5] + "relu1"]
    out = model(x)
    save_pruned_module(model, tmp_path / "cnn", result=result)
    assert not list((tmp_path / "cnn").glob("*.pt*")) and (tmp_path / "cnn" / "model.safetensors").is_file()
    fresh = TinyCNN()
    again = load_pruned_module(fresh, tmp_path / "cnn")
    assert torch.equal(again(x), out)


# ------------------------------------------------------------------------------------- bad input
class _NoGrad(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():  # DepGraph traces autograd: nothing to trace here
            return self.lin(x)


def test_untraceable_model_is_named():
    with pytest.raises(ValueError, match="DepGraph could not trace _NoGrad"):
        prune_module_trees(
            _NoGrad(), PruningTreeConfig(target=0.1, importance="magnitude"), torch.randn(1, 4)
        )


def test_target_beyond_the_trees():
    model, _ = make_model("llama")
    cfg = PruningTreeConfig(target=0.9, importance="magnitude", tree_kinds=["attention"])
    with pytest.raises(ValueError, match="trees together remove at most"):
        prune(model, cfg, progress=False)


def test_exclude_keyword_matching_nothing():
    model, _ = make_model("llama")
    cfg = PruningTreeConfig(
        target=0.1, importance="magnitude", exclude_keywords=["lm_head", "no_such_module"]
    )
    with pytest.raises(ValueError, match=r"exclude_keywords \['no_such_module'\] match no module"):
        prune(model, cfg, progress=False)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"target": 1.0}, "target"),
        ({"target_kind": "flops"}, "target_kind"),
        ({"importance": "random"}, "importance"),
        ({"tree_kinds": ["block"]}, "tree_kinds"),
        ({"exclude_keywords": "lm_head"}, "exclude_keywords"),
        ({"target_modules": ["q_proj"]}, "exclude_keywords"),
    ],
)
def test_config_validation(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        PruningTreeConfig(**kwargs)


def test_config_round_trips():
    cfg = PruningTreeConfig(
        target=0.25, target_kind="latency", tree_kinds=["transform"], exclude_keywords=["x"]
    )
    again = hf_prune.PruningConfig.from_dict(cfg.to_dict())
    assert again == cfg


@pytest.mark.parametrize("family", ["llama", "bert"])
def test_block_input_reuse_scores_equal_full_forward(family):
    from hf_prune.calibration.data import build_calibration_batches
    from hf_prune.calibration.depth import model_loss
    from hf_prune.methods.pruning_trees import _block_tree_losses
    from hf_prune.surgery.pruning_trees import applied

    model, fam = make_model(family)
    batches = build_calibration_batches(CALIB, CharTokenizer())
    stack = hf_prune.arch.get_arch(model).stacks[-1]
    _, judge = model_loss(model, batches, stack)
    trees = list(_trees(model, fam.inputs).values())
    fast = _block_tree_losses(model, batches, stack, judge)(trees)
    for t in trees:
        with applied(model, t):
            slow = model_loss(model, batches, stack, judge)[0]
        assert fast[t.key] == pytest.approx(slow, rel=1e-5, abs=1e-7), t.key
    assert len(set(fast.values())) > len(trees) // 2  # the trees really differ


@pytest.mark.parametrize("family", ["llama", "opt", "gpt2", "bert", "vit"])
def test_every_tree_applies_alone_and_keeps_the_output_shape(family):
    from hf_prune.surgery.pruning_trees import applied

    model, fam = make_model(family)
    ref = logits(model, fam.inputs)
    trees = list(_trees(model, fam.inputs).values())
    assert {t.kind for t in trees} == {"transform", "attention", "head"}
    for t in trees:
        with applied(model, t):
            out = logits(model, fam.inputs)
        assert out.shape == ref.shape and torch.isfinite(out).all(), t.key
        assert not torch.equal(out, ref), t.key  # the tree really changed the computation
    assert torch.equal(logits(model, fam.inputs), ref)  # and every change was undone


def test_latency_target_on_a_wide_layer():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(1024, 4096), nn.ReLU(), nn.Linear(4096, 1024)).eval()
    x = torch.randn(64, 1024)
    cfg = PruningTreeConfig(target=0.2, target_kind="latency", importance="magnitude", latency_repeats=5)
    result = prune_module_trees(model, cfg, x)
    # Either linear as identity cuts the other to 1024 x 1024: one tree removes 3/4 of the work.
    assert len(result.removed) == 1 and result.removed[0] in ("transform:0", "transform:2")
    assert result.latency["pruned_ms"] <= 0.8 * result.latency["baseline_ms"]


def test_at_most_budget_never_passes_the_target():
    model, _ = make_model("llama")
    blocks = sum(hf_prune.arch.param_count(b) for b in model.model.layers)
    cfg = PruningTreeConfig(target=0.3, importance="magnitude", budget="at_most", latency_repeats=1)
    info = prune(model, cfg, progress=False).report.extra["pruning_trees"]
    assert 0 < info["params_removed"] <= 0.3 * blocks == pytest.approx(0.3 * info["params_before"])


def test_trees_after_depth_pruning_reload_and_refuse_after_per_layer_widths(tmp_path):
    from hf_prune import CustomConfig

    model, fam = make_model("llama")
    pm = prune(model, CustomConfig(description="blocks first"), progress=False)
    pm.remove_layers([1])
    pm = prune(pm, PruningTreeConfig(target=0.2, importance="magnitude", latency_repeats=1), progress=False)
    again = hf_prune.AutoPrunedModelForCausalLM.from_pretrained(pm.save_pretrained(tmp_path / "d"))
    assert torch.equal(again(**fam.inputs).logits, pm(**fam.inputs).logits)

    model, _ = make_model("llama")
    pm = prune(model, CustomConfig(description="widths first"), progress=False)
    pm.prune_neurons(0, list(range(20)))
    with pytest.raises(ValueError, match="must come before per-layer width pruning"):
        prune(pm, PruningTreeConfig(target=0.2, importance="magnitude"), progress=False)


def test_generate_with_kv_cache_after_removing_the_first_attention():
    # The removed attention never writes its cache slot: generation must still agree with no cache.
    model, fam = make_model("llama")
    apply_plan(model, _trees(model, fam.inputs)["attention:model.layers.0.self_attn"].plan)
    ids = fam.inputs["input_ids"][:1, :5]
    cached = model.generate(ids, max_new_tokens=6, do_sample=False, use_cache=True, pad_token_id=0)
    plain = model.generate(ids, max_new_tokens=6, do_sample=False, use_cache=False, pad_token_id=0)
    assert cached.shape == (1, 11) and torch.equal(cached, plain)
