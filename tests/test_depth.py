"""Depth pruning: each scorer against a naive reference, selection against brute force, removal end to end."""

from __future__ import annotations

import copy
import itertools
import json
import math

import pytest
import torch
from families import CharTokenizer, logits, make_model

import hf_prune
from hf_prune import (
    AblationDepthConfig,
    ActivationVarianceConfig,
    AngularDepthConfig,
    BlockInfluenceConfig,
    CalibrationConfig,
    CustomConfig,
    IterativeDepthConfig,
    PruningConfig,
    prune,
)
from hf_prune.arch import get_arch, get_layers
from hf_prune.calibration.data import build_calibration_batches
from hf_prune.scoring.depth import angular_distance, avss_scores, last_token_states
from hf_prune.selection.depth import candidate_blocks, resolve_count, select_blocks

CALIB = CalibrationConfig(
    dataset=[f"calibration text number {i} with some words " * 5 for i in range(20)],
    nsamples=6,
    seqlen=16,
    batch_size=2,
)
FAMILIES = ["llama", "opt", "gpt2", "bert", "llava"]
CONFIGS = {
    "angular": AngularDepthConfig,
    "influence": BlockInfluenceConfig,
    "ablation": AblationDepthConfig,
    "variance": ActivationVarianceConfig,
    "iterative": IterativeDepthConfig,
}
OPEN = {"protect_first": 0, "protect_last": 0}


def _prune(model, cfg):
    return prune(model, cfg, calibration=CALIB, tokenizer=CharTokenizer(), progress=False)


def _batches():
    return build_calibration_batches(CALIB, CharTokenizer())


def _block_io(model):
    """Every block's (input, output) hidden states per batch, from plain forward hooks on the full model."""
    spec = get_arch(model).stacks[-1]
    layers = get_layers(model, spec)
    seen: dict[int, list[tuple[torch.Tensor, torch.Tensor]]] = {i: [] for i in range(len(layers))}
    handles = []
    for i, blk in enumerate(layers):

        def hook(mod, args, kwargs, out, i=i):
            h_in = args[0] if args else kwargs["hidden_states"]
            h_out = out[0] if isinstance(out, tuple) else out
            seen[i].append((h_in.detach().clone(), h_out.detach().clone()))

        handles.append(blk.register_forward_hook(hook, with_kwargs=True))
    try:
        with torch.no_grad():
            for b in _batches():
                model(**b, **({"use_cache": False} if spec.causal else {}))
    finally:
        for h in handles:
            h.remove()
    return seen


# ------------------------------------------------------------------------------------ pure scores
def test_last_token_states_right_and_left_padding():
    h = torch.arange(2 * 4 * 3, dtype=torch.float32).reshape(2, 4, 3)
    right = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]])
    left = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])
    torch.testing.assert_close(last_token_states(h, right), torch.stack([h[0, 1], h[1, 3]]))
    torch.testing.assert_close(last_token_states(h, left), torch.stack([h[0, 3], h[1, 3]]))
    torch.testing.assert_close(last_token_states(h, None), h[:, -1])


def test_angular_distance_known_angles():
    a = torch.tensor([[1.0, 0.0], [1.0, 0.0], [2.0, 0.0]])
    b = torch.tensor([[0.0, 3.0], [-1.0, 0.0], [5.0, 0.0]])
    torch.testing.assert_close(angular_distance(a, b), torch.tensor([0.5, 1.0, 0.0], dtype=torch.float64))


def test_avss_matches_hand_computation():
    var, spars = [1.0, 2.0, 4.0], [0.5, 0.25, 0.25]
    v = [x / (7 / 3) for x in var]
    s = [x / (1 / 3) for x in spars]
    raw = [a / b for a, b in zip(v, s, strict=True)]
    expected = [r / sum(raw) for r in raw]
    assert avss_scores(var, spars) == pytest.approx(expected)


# ------------------------------------------------------------------------------- selection vs brute force
@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("count", [1, 2, 3])
def test_select_blocks_equals_brute_force(seed, count):
    g = torch.Generator().manual_seed(seed)
    scores = torch.rand(8, generator=g).tolist()
    cands = candidate_blocks(8, 1, 1, protect=[4])
    got = select_blocks(scores, candidates=cands, count=count)
    best = min(itertools.combinations(cands, count), key=lambda c: sum(scores[i] for i in c))
    assert sum(scores[i] for i in got) == pytest.approx(sum(scores[i] for i in best))
    got_run = select_blocks(scores, candidates=cands, count=count, contiguous=True)
    runs = [c for c in itertools.combinations(cands, count) if c[-1] - c[0] == count - 1]
    best_run = min(runs, key=lambda c: sum(scores[i] for i in c))
    assert tuple(got_run) == best_run
    threshold = sorted(scores)[4]
    assert select_blocks(scores, candidates=cands, threshold=threshold) == [
        i for i in cands if scores[i] <= threshold
    ]


def test_contiguous_threshold_takes_the_longest_cheap_run():
    dist = {(0, 1): 0.5, (1, 1): 0.1, (2, 1): 0.1, (1, 2): 0.15, (0, 2): 0.6, (0, 3): 0.9, (1, 3): 0.5}
    cost = lambda s, n: dist.get((s, n), 9.0)  # noqa: E731
    got = select_blocks(
        [0.5, 0.1, 0.1, 0.7], candidates=[0, 1, 2, 3], threshold=0.2, contiguous=True, run_cost=cost
    )
    assert got == [1, 2]


def test_protection_and_counts():
    assert candidate_blocks(6, 2, 2) == [2, 3]
    assert resolve_count(10, None, 0.25) == 2
    with pytest.raises(ValueError, match="num_layers=6 must be smaller"):
        resolve_count(6, 6, None)
    with pytest.raises(ValueError, match="only 2 are removable"):
        select_blocks([0.0] * 6, candidates=[2, 3], count=3)


# --------------------------------------------------------------------------- scorers vs naive references
def test_angular_distance_equals_token_by_token_reference():
    model, _ = make_model("llama")
    pm = _prune(copy.deepcopy(model), AngularDepthConfig(num_layers=2, **OPEN))
    matrix = pm.report.extra["depth"]["pairwise_distance"]
    io = _block_io(model)
    n = len(io)
    # The last-token state of every sample at depth 0..n (input of block 0, output of block l).
    states = []
    for j in range(len(io[0])):
        for s in range(io[0][j][0].shape[0]):
            states.append([io[0][j][0][s, -1].tolist()] + [io[b][j][1][s, -1].tolist() for b in range(n)])
    for start in range(n):
        for end in range(start + 1, n + 1):
            ds = []
            for sample in states:
                a, b = sample[start], sample[end]
                cos = sum(x * y for x, y in zip(a, b, strict=True)) / (
                    math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
                )
                ds.append(math.acos(max(-1.0, min(1.0, cos))) / math.pi)
            assert matrix[start][end] == pytest.approx(sum(ds) / len(ds), abs=1e-5)
    # The removed run is the cheapest run of two.
    runs = {s: matrix[s][s + 2] for s in range(n - 1)}
    best = min(runs, key=runs.get)
    assert pm.report.removed_layers["decoder"] == [best, best + 1]


def test_block_influence_equals_token_by_token_reference():
    model, _ = make_model("opt")
    pm = _prune(copy.deepcopy(model), BlockInfluenceConfig(num_layers=1, **OPEN))
    scores = pm.report.extra["depth"]["scores"]
    for blk, pairs in _block_io(model).items():
        vals = []
        for h_in, h_out in pairs:
            for a, b in zip(
                h_in.reshape(-1, h_in.shape[-1]), h_out.reshape(-1, h_out.shape[-1]), strict=True
            ):
                vals.append(1 - float(torch.dot(a, b) / (a.norm() * b.norm())))
        assert scores[str(blk)] == pytest.approx(sum(vals) / len(vals), abs=1e-5)
    low = min(scores, key=lambda k: scores[k])
    assert pm.report.removed_layers == {"decoder": [int(low)]}


@pytest.mark.parametrize("activations", ["update", "output"])
def test_activation_variance_equals_reference(activations):
    model, _ = make_model("gpt2")
    pm = _prune(copy.deepcopy(model), ActivationVarianceConfig(num_layers=1, activations=activations, **OPEN))
    extra = pm.report.extra["depth"]
    var, spars = [], []
    for _l, pairs in sorted(_block_io(model).items()):
        xs = [(o - i if activations == "update" else o).double() for i, o in pairs]
        flat = torch.cat([x.reshape(-1) for x in xs])
        var.append(float(flat.var(unbiased=False)))
        sparse = sum(int((x.abs() <= 0.1 * x.pow(2).mean().sqrt()).sum()) for x in xs)
        spars.append(sparse / flat.numel())
    assert extra["variance"] == pytest.approx(var, rel=1e-6)
    assert extra["sparsity"] == pytest.approx(spars)
    assert list(extra["scores"].values()) == pytest.approx(avss_scores(var, spars))


@pytest.mark.parametrize("family", ["llama", "bert"])
def test_ablation_equals_reevaluating_with_the_block_removed(family):
    model, _ = make_model(family)
    pm = _prune(copy.deepcopy(model), AblationDepthConfig(num_layers=1, **OPEN))
    extra = pm.report.extra["depth"]
    batches = _batches()
    stack = get_arch(model).stacks[-1]
    with torch.no_grad():
        dense_out = [model(**b).logits for b in batches]
    for blk in range(len(get_layers(model, stack))):
        naive = prune(copy.deepcopy(model), CustomConfig(), progress=False)
        naive.remove_layers([blk])
        total = count = 0.0
        with torch.no_grad():
            for b, ref in zip(batches, dense_out, strict=True):
                if family == "llama":
                    out = naive(**b, labels=b["input_ids"], use_cache=False)
                    n = b["input_ids"][:, 1:].numel()
                    total, count = total + float(out.loss) * n, count + n
                else:
                    logq = torch.log_softmax(ref, -1)
                    logp = torch.log_softmax(naive(**b).logits, -1)
                    kl = (logq.exp() * (logq - logp)).sum(-1)
                    total, count = total + float(kl.sum()), count + kl.numel()
        assert extra["ablated_loss"][blk] == pytest.approx(total / count, rel=1e-5, abs=1e-7)
    assert extra["loss"] == ("lm" if family == "llama" else "kl")


def test_ablation_threshold_mode_removes_only_blocks_that_help():
    model, _ = make_model("llama")
    pm = _prune(copy.deepcopy(model), AblationDepthConfig(threshold=-0.01, **OPEN))
    scores = pm.report.extra["depth"]["scores"]
    assert pm.report.removed_layers.get("decoder", []) == sorted(
        int(k) for k, v in scores.items() if v <= -0.01
    )


# ----------------------------------------------------------------------------------- iterative
def test_iterative_removes_the_least_harmful_block_each_round():
    model, _ = make_model("llama")
    pm = _prune(copy.deepcopy(model), IterativeDepthConfig(num_layers=2, **OPEN))
    rounds = pm.report.extra["depth"]["rounds"]
    assert [r["round"] for r in rounds] == [1, 2]
    for r in rounds:
        assert r["removed"] == int(min(r["scores"], key=lambda k: (r["scores"][k], int(k))))
    # Round 2 re-scored the three remaining blocks by their original numbers.
    assert len(rounds[1]["scores"]) == 3 and str(rounds[0]["removed"]) not in rounds[1]["scores"]
    assert pm.report.removed_layers["decoder"] == sorted(r["removed"] for r in rounds)
    # Round 1 equals one-shot ablation.
    one = _prune(copy.deepcopy(model), AblationDepthConfig(num_layers=1, **OPEN))
    assert rounds[0]["scores"] == pytest.approx(one.report.extra["depth"]["scores"])


def test_iterative_protection_uses_original_numbering():
    model, _ = make_model("llama")
    pm = _prune(copy.deepcopy(model), IterativeDepthConfig(num_layers=2, protect_first=1, protect_last=0))
    assert 0 not in pm.report.removed_layers["decoder"]
    with pytest.raises(ValueError, match="only 2 of 4 are removable"):
        _prune(copy.deepcopy(model), IterativeDepthConfig(num_layers=3, protect_first=1, protect_last=1))


# ------------------------------------------------------------------------------ end to end per family
@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("strategy", sorted(CONFIGS))
def test_depth_strategy_family_matrix(family, strategy, tmp_path):
    model, fam = make_model(family)
    n = get_arch(model).stacks[-1]
    before = len(get_layers(model, n))
    pm = _prune(model, CONFIGS[strategy](num_layers=2, protect_first=1, protect_last=0))
    removed = pm.report.removed_layers[n.name]
    assert len(removed) == 2 and 0 not in removed
    assert len(get_layers(pm.base_model, n)) == before - 2
    assert [r.block for r in pm.report.layers if r.kind == "block"] == sorted(
        removed
    ) or strategy == "iterative"
    expected = logits(pm, fam.inputs)
    out = pm.save_pretrained(tmp_path / "ckpt")
    again = getattr(hf_prune, fam.pruned_auto).from_pretrained(out)
    torch.testing.assert_close(logits(again, fam.inputs), expected, atol=1e-5, rtol=1e-5)
    assert again.report.extra["depth"]["removed"] == pm.report.extra["depth"]["removed"]
    assert isinstance(PruningConfig.from_pretrained(out), CONFIGS[strategy])
    plain = fam.auto.from_pretrained(out).eval()
    torch.testing.assert_close(logits(plain, fam.inputs), expected, atol=1e-5, rtol=1e-5)
    cfg = json.loads((out / "config.json").read_text())
    layers_in_cfg = cfg.get("text_config", cfg).get("num_hidden_layers", cfg.get("n_layer"))
    assert layers_in_cfg == before - 2
    card = (out / "README.md").read_text()
    assert "Removed blocks" in card or "removed" in card.lower()


@pytest.mark.parametrize("family", ["llama", "opt", "gpt2"])
def test_generate_with_cache_matches_uncached_after_removal(family):
    model, fam = make_model(family)
    pm = _prune(model, BlockInfluenceConfig(num_layers=2, protect_first=1, protect_last=0))
    ids = fam.inputs["input_ids"][:1, :6]
    kw = {"max_new_tokens": 8, "do_sample": False, "pad_token_id": 0}
    cached = pm.generate(input_ids=ids, use_cache=True, **kw)
    uncached = pm.generate(input_ids=ids, use_cache=False, **kw)
    assert torch.equal(cached, uncached)
    # The cache really is used: each kept attention module owns a slot of its new position.
    idx = [blk.self_attn.layer_idx for blk in pm.base_model.model.layers] if family == "llama" else None
    assert idx is None or idx == list(range(len(idx)))


# ------------------------------------------------------------------------------------- bad input
def test_bad_input_is_refused_clearly():
    with pytest.raises(ValueError, match="exactly one of num_layers, ratio, threshold or layers"):
        AngularDepthConfig(num_layers=2, ratio=0.25)
    with pytest.raises(ValueError, match="exactly one"):
        BlockInfluenceConfig()
    with pytest.raises(ValueError, match="ratio"):
        BlockInfluenceConfig(ratio=1.0)
    with pytest.raises(ValueError, match="target_modules / exclude_modules do not apply"):
        BlockInfluenceConfig(num_layers=1, exclude_modules=["lm_head"])
    with pytest.raises(ValueError, match="criterion must be one of"):
        IterativeDepthConfig(num_layers=1, criterion="random")
    with pytest.raises(ValueError, match="cannot force one contiguous run"):
        IterativeDepthConfig(num_layers=1, contiguous=True)
    model, _ = make_model("llama")
    with pytest.raises(ValueError, match="num_layers=4 must be smaller than the stack's 4 blocks"):
        _prune(copy.deepcopy(model), BlockInfluenceConfig(num_layers=4, **OPEN))
    with pytest.raises(ValueError, match=r"layers \[0\] are protected"):
        _prune(copy.deepcopy(model), BlockInfluenceConfig(layers=[0, 2], protect_first=1, protect_last=0))
    with pytest.raises(ValueError, match="would remove all 4 blocks"):
        _prune(copy.deepcopy(model), BlockInfluenceConfig(layers=[0, 1, 2, 3], **OPEN))
    with pytest.raises(ValueError, match="only 0 are removable"):
        _prune(copy.deepcopy(model), BlockInfluenceConfig(num_layers=1))  # 4 blocks, 2 + 2 protected
    with pytest.raises(ValueError, match="outside"):
        _prune(copy.deepcopy(model), BlockInfluenceConfig(num_layers=1, protect=[7]))
    with pytest.raises(ValueError, match="needs calibration data"):
        prune(copy.deepcopy(model), AngularDepthConfig(num_layers=1, **OPEN), progress=False)


def test_pruning_a_reloaded_checkpoint_again_keeps_the_original_numbering(tmp_path):
    model, fam = make_model("llama")
    pm = _prune(model, BlockInfluenceConfig(layers=[1], **OPEN))
    again = hf_prune.AutoPrunedModelForCausalLM.from_pretrained(pm.save_pretrained(tmp_path / "a"))
    # Position 1 of the reloaded 3-block model is the original block 2.
    more = _prune(again, BlockInfluenceConfig(layers=[1], **OPEN))
    assert more.report.removed_layers["decoder"] == [1, 2]
    assert more.report.extra["depth"]["removed"] == [2]
    assert set(more.report.extra["depth"]["scores"]) == {"0", "2", "3"}


# ----------------------------------------------------------------------------- healing and the CLI
def test_iterative_with_healing_records_each_round_and_changes_weights():
    from hf_prune.zoo.tokenizer import train_bpe_tokenizer

    texts = [f"the {w} sat on the mat number {i}. " * 8 for i, w in enumerate(["cat", "dog", "bird"] * 6)]
    tok = train_bpe_tokenizer(texts, vocab_size=300, model_max_length=64)
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=len(tok),
            hidden_size=32,
            intermediate_size=48,
            num_hidden_layers=4,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=64,
        )
    ).eval()
    calib = CalibrationConfig(dataset=texts, nsamples=4, seqlen=32, batch_size=2)
    kept = model.model.layers[0].mlp.down_proj.weight.detach().clone()
    pm = prune(
        model,
        IterativeDepthConfig(num_layers=2, heal_steps=3, heal_lr=1e-3, **OPEN),
        calibration=calib,
        tokenizer=tok,
        progress=False,
    )
    rounds = pm.report.extra["depth"]["rounds"]
    assert [r["healing"]["steps"] for r in rounds] == [3, 3]
    assert pm.report.extra["depth"]["heal_steps"] == 3 and "healing" not in pm.report.extra
    assert not torch.equal(pm.base_model.model.layers[0].mlp.down_proj.weight, kept)
    assert not any("lora" in n for n, _ in pm.base_model.named_modules())
    # A healed model is not a passthrough of its base: the mergekit export refuses it.
    with pytest.raises(ValueError, match="heal"):
        pm.export_mergekit_yaml("unused.yaml", base_model="base")


def test_depth_cli_end_to_end(tmp_path, capsys):
    from hf_prune.cli import main
    from hf_prune.zoo import shipped_model_dir

    base = shipped_model_dir("llama-gqa-small")
    calib = tmp_path / "calib.txt"
    hf_prune.zoo.write_split_text("calibration", calib)
    out, yaml_path, plots = tmp_path / "out", tmp_path / "cut.yaml", tmp_path / "plots"
    rc = main(
        [
            "depth",
            str(base),
            "--strategy",
            "angular",
            "--num-layers",
            "2",
            "--protect-last",
            "1",
            "--calibration",
            str(calib),
            "--nsamples",
            "4",
            "--seqlen",
            "64",
            "--output",
            str(out),
            "--mergekit-yaml",
            str(yaml_path),
            "--plots",
            str(plots),
            "--no-progress",
            "--speed-seqlen",
            "32",
        ]
    )
    text = capsys.readouterr().out
    assert rc == 0, text
    assert "speedup" in text and "removed" in text
    record = json.loads((out / "pruning_config.json").read_text())
    removed = record["report"]["removed_layers"]["decoder"]
    assert len(removed) == 2 and removed[1] == removed[0] + 1 and 0 not in removed and 1 not in removed
    assert record["report"]["speed"]["speedup"] > 0
    card = (out / "README.md").read_text()
    assert "Measured speed" in card and "Depth-pruning scores" in card
    import yaml

    slices = yaml.safe_load(yaml_path.read_text())["slices"]
    kept = [i for s in slices for i in range(*s["sources"][0]["layer_range"])]
    assert kept == [i for i in range(6) if i not in removed]
    assert {p.name for p in plots.iterdir()} >= {"layer_importance.png", "activation_comparison.png"}
    assert (
        main(
            [
                "depth",
                str(base),
                "--strategy",
                "angular",
                "--num-layers",
                "6",
                "--calibration",
                str(calib),
                "-o",
                str(tmp_path / "bad"),
                "--no-progress",
                "--no-speed",
            ]
        )
        == 2
    )
    assert "num_layers=6 must be smaller" in capsys.readouterr().err


def test_depth_plots(tmp_path):
    from hf_prune.plots import (
        depth_scores,
        plot_activation_comparison,
        plot_layer_importance,
        plot_score_trajectory,
    )

    model, fam = make_model("llama")
    dense = copy.deepcopy(model)
    pm = _prune(model, IterativeDepthConfig(num_layers=2, **OPEN))
    fig = plot_score_trajectory(pm.report, save_path=tmp_path / "traj.png")
    assert (tmp_path / "traj.png").stat().st_size > 0
    assert len(fig.axes[0].lines) == 4  # one line per original block
    fig = plot_activation_comparison(dense, pm, fam.inputs, save_path=tmp_path / "act.png")
    top = fig.axes[0]
    # The pruned line has a gap (NaN) exactly at the removed blocks.
    ys = top.lines[1].get_ydata()
    assert [i for i, y in enumerate(ys) if y != y] == pm.report.removed_layers["decoder"]
    fig = plot_layer_importance({"iterative": depth_scores(pm.report)}, save_path=tmp_path / "imp.png")
    assert (tmp_path / "imp.png").is_file()
    with pytest.raises(ValueError, match="no depth record"):
        depth_scores(_prune(copy.deepcopy(dense), CustomConfig()).report)
    with pytest.raises(ValueError, match="No iterative rounds"):
        plot_score_trajectory(_prune(copy.deepcopy(dense), BlockInfluenceConfig(num_layers=1, **OPEN)).report)
