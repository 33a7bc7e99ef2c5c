"""PruningCallback: gradual pruning inside Trainer, masks kept exact, resume, DDP, final save."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import transformers as T
from transformers import Trainer, TrainerCallback, TrainingArguments

from hf_prune import (
    AngularDepthConfig,
    AutoPrunedModelForCausalLM,
    MagnitudeConfig,
    PruningCallback,
    StructuredMagnitudeConfig,
    WandaConfig,
    prune,
)
from hf_prune.allocation.schedule import pruning_steps, scheduled_sparsity, sparsity_in_force
from hf_prune.integration.callback import STATE_FILE

VOCAB = 96
SEQ = 16
PROJ = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "gradual_pruning.py"


# ------------------------------------------------------------------------------------ schedule math
def test_cubic_schedule_matches_zhu_and_gupta_and_reaches_the_target_exactly():
    kw = dict(target=0.8, start_step=10, end_step=110, schedule="cubic", initial_sparsity=0.0)
    assert scheduled_sparsity(5, **kw) == 0.0
    assert scheduled_sparsity(10, **kw) == 0.0
    assert scheduled_sparsity(60, **kw) == pytest.approx(0.8 * (1 - 0.5**3))
    assert scheduled_sparsity(110, **kw) == 0.8 and scheduled_sparsity(500, **kw) == 0.8
    values = [scheduled_sparsity(t, **kw) for t in range(10, 111)]
    steps = [b - a for a, b in itertools.pairwise(values)]
    assert all(d >= 0 for d in steps) and steps[0] > steps[-1]  # fast first, slow near the target
    lin = dict(kw, schedule="linear")
    assert scheduled_sparsity(60, **lin) == pytest.approx(0.4)
    assert scheduled_sparsity(10, **dict(kw, schedule="constant")) == 0.8


def test_pruning_steps_include_the_end_step_and_sparsity_holds_between_them():
    assert pruning_steps(0, 10, 4) == [0, 4, 8, 10]
    assert pruning_steps(3, 3, 5) == [3]
    kw = dict(target=0.5, start_step=0, end_step=10, frequency=4, schedule="linear")
    assert sparsity_in_force(5, **kw) == pytest.approx(0.2)  # last pruning at step 4
    assert sparsity_in_force(9, **kw) == pytest.approx(0.4)
    assert sparsity_in_force(10, **kw) == 0.5 and sparsity_in_force(99, **kw) == 0.5


# ------------------------------------------------------------------------------------ Trainer runs
def _model(seed: int = 0) -> T.LlamaForCausalLM:
    torch.manual_seed(seed)
    cfg = T.LlamaConfig(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=64, pad_token_id=0,
    )  # fmt: skip
    return T.LlamaForCausalLM(cfg)


class _Data(torch.utils.data.Dataset):
    def __init__(self, n: int = 64) -> None:
        g = torch.Generator().manual_seed(1)
        self.ids = torch.randint(3, VOCAB, (n, SEQ), generator=g)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[i], "labels": self.ids[i].clone()}


def _args(out: Path, steps: int, **kw) -> TrainingArguments:
    base = dict(
        output_dir=str(out), max_steps=steps, per_device_train_batch_size=4, learning_rate=1e-3,
        weight_decay=0.1, logging_steps=1, save_strategy="no", report_to=[], use_cpu=True, seed=0,
        data_seed=0, disable_tqdm=True,
    )  # fmt: skip
    base.update(kw)
    return TrainingArguments(**base)


def _layers(model):
    return {n: m for n, m in model.named_modules() if n.endswith(PROJ)}


class _Probe(TrainerCallback):
    """Measures zeros of every projection from the weights themselves at each log (not the callback's)."""

    def __init__(self):
        self.seen: dict[int, dict[str, int]] = {}

    def on_log(self, args, state, control, model=None, **kwargs):
        self.seen[state.global_step] = {n: int((m.weight == 0).sum()) for n, m in _layers(model).items()}


def _train(model, callback, out, steps, resume=None, probe=None, **kw):
    callbacks = [callback] + ([probe] if probe else [])
    trainer = Trainer(model=model, args=_args(out, steps, **kw), train_dataset=_Data(), callbacks=callbacks)
    torch.set_num_threads(1)
    trainer.train(resume_from_checkpoint=resume)
    return trainer


def test_gradual_magnitude_follows_the_schedule_within_one_weight_per_layer(tmp_path):
    model = _model()
    before = {n: m.weight.detach().clone() for n, m in _layers(model).items()}
    probe = _Probe()
    kw = dict(target=0.6, start_step=0, end_step=8, frequency=2, schedule="cubic")
    cb = PruningCallback(
        MagnitudeConfig(sparsity=0.6), schedule="cubic", start_step=0, end_step=8, frequency=2
    )
    _train(model, cb, tmp_path, 12, probe=probe, gradient_accumulation_steps=2)
    assert set(range(1, 13)) <= set(probe.seen)
    sizes = {n: m.weight.numel() for n, m in _layers(model).items()}
    for step in range(1, 13):
        want = sparsity_in_force(step, **kw)
        for name, zeros in probe.seen[step].items():
            assert abs(zeros - want * sizes[name]) <= 1, (step, name, zeros, want * sizes[name])
    assert [h["step"] for h in cb.history] == [2, 4, 6, 8]
    assert all(probe.seen[s] == probe.seen[8] for s in range(8, 13))  # exactly the target to the end
    # The kept weights trained (weight decay, AdamW) while the masked ones stayed exactly zero.
    for name, module in _layers(model).items():
        mask = cb.masks()[name]
        assert torch.equal(module.weight[~mask], torch.zeros_like(module.weight[~mask]))
        assert not torch.allclose(module.weight[mask], before[name][mask])
    assert cb.pruned.report.extra["training"]["final_sparsity"] == pytest.approx(0.6, abs=1e-3)


def test_wanda_from_training_batches_saves_in_our_format_and_reloads(tmp_path):
    model = _model()
    cb = PruningCallback(WandaConfig(sparsity=0.5), schedule="linear", end_step=6, frequency=3)
    _train(model, cb, tmp_path / "run", 8)
    assert [h["step"] for h in cb.history] == [3, 6] and cb.history[-1]["measured"] == pytest.approx(0.5)
    cb.pruned.save_pretrained(tmp_path / "saved")
    back = AutoPrunedModelForCausalLM.from_pretrained(tmp_path / "saved")
    ids = _Data().ids[:2]
    model.eval()
    with torch.no_grad():
        assert torch.allclose(back(input_ids=ids).logits, model(input_ids=ids).logits, atol=1e-6)
    training = back.report.extra["training"]
    assert training["method"] == "wanda" and training["schedule"] == "linear"
    assert training["calibration"] == "last 4 training batches" and len(training["history"]) == 2
    linear = [r for r in back.report.layers if r.kind == "linear"]
    assert linear and all(r.sparsity_measured == pytest.approx(0.5, abs=0.01) for r in linear)
    card = (tmp_path / "saved" / "README.md").read_text()
    assert "Training-time pruning" in card and "linear" in card


def test_resume_from_a_mid_run_checkpoint_gives_the_same_final_masks(tmp_path):
    def cb():
        return PruningCallback(WandaConfig(sparsity=0.5), schedule="cubic", end_step=9, frequency=3)

    full = cb()
    _train(_model(), full, tmp_path / "a", 12, save_strategy="steps", save_steps=5)
    ckpt = tmp_path / "a" / "checkpoint-5"
    assert (ckpt / STATE_FILE).is_file()
    resumed = cb()
    _train(_model(seed=7), resumed, tmp_path / "a", 12, resume=str(ckpt))
    assert [h["step"] for h in resumed.history] == [3, 6, 9]
    a, b = full.masks(), resumed.masks()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_keep_mode_keeps_one_shot_masks_exact_while_training(tmp_path):
    model = _model()
    pruned = prune(model, MagnitudeConfig(sparsity=0.5, pattern="2:4"))
    cb = PruningCallback(None, pruned=pruned)
    _train(pruned.base_model, cb, tmp_path, 5)
    for module in _layers(model).values():
        groups = (module.weight != 0).reshape(module.weight.shape[0], -1, 4).sum(-1)
        assert int(groups.max()) <= 2  # every 2:4 group intact after 5 AdamW steps with weight decay
    assert cb.sparsity == pytest.approx(0.5)


def test_gradual_width_pruning_shrinks_on_schedule_and_trains_the_new_weights(tmp_path):
    model = _model()
    cb = PruningCallback(StructuredMagnitudeConfig(sparsity=0.5), schedule="linear", end_step=4, frequency=2)

    class Width(TrainerCallback):
        widths: dict[int, int] = {}

        def on_step_end(self, args, state, control, model=None, **kw):
            self.widths[state.global_step] = model.model.layers[0].mlp.up_proj.out_features

    width = Width()
    trainer = _train(model, cb, tmp_path, 6, probe=width)
    assert width.widths[1] == 64 and width.widths[2] == 48 and width.widths[4] == 32 and width.widths[6] == 32
    params = {id(p) for g in trainer.optimizer.param_groups for p in g["params"]}
    assert id(model.model.layers[0].mlp.up_proj.weight) in params  # the optimizer trains the shrunk weight


@pytest.mark.slow
def test_ddp_two_processes_hold_identical_masks(tmp_path):
    bin_dir = Path(sys.executable).parent
    launch = [
        str(bin_dir / "accelerate"), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no",
    ]  # fmt: skip
    cmd = [
        *launch, str(EXAMPLE), "--tiny", "--output", str(tmp_path / "out"), "--steps", "6", "--end-step", "4",
        "--frequency", "2", "--seqlen", "32", "--batch-size", "2", "--dump-masks", str(tmp_path / "masks"),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert '"processes": 2' in done.stdout
    from safetensors.torch import load_file

    a = load_file(str(tmp_path / "masks" / "masks-rank0.safetensors"))
    b = load_file(str(tmp_path / "masks" / "masks-rank1.safetensors"))
    assert a.keys() == b.keys() and len(a) > 0
    assert all(torch.equal(a[k], b[k]) for k in a)
    kept = sum(int(v.sum()) for v in a.values()) / sum(v.numel() for v in a.values())
    assert kept == pytest.approx(0.5, abs=1e-3)


# ------------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize(
    ("kwargs", "error", "words"),
    [
        (dict(start_step=10, end_step=5), ValueError, "end_step (5) is before start_step (10)"),
        (dict(schedule="exponential", end_step=5), ValueError, "schedule must be one of"),
        (dict(frequency=0, end_step=5), ValueError, "frequency must be an int >= 1"),
        (dict(end_step=5, initial_sparsity=0.9), ValueError, "initial_sparsity must be in"),
        (dict(end_step=5, calibration_batches=0), ValueError, "calibration_batches"),
    ],
)
def test_bad_schedules_are_refused_clearly(kwargs, error, words):
    with pytest.raises(error) as info:
        PruningCallback(MagnitudeConfig(sparsity=0.5), **kwargs)
    assert words in str(info.value)


def test_unsupported_configs_and_states_are_refused_clearly(tmp_path):
    with pytest.raises(ValueError, match="cannot ramp an N:M pattern"):
        PruningCallback(MagnitudeConfig(pattern="2:4"), end_step=5)
    with pytest.raises(TypeError, match="one-shot"):
        PruningCallback(AngularDepthConfig(num_layers=1), end_step=5)
    with pytest.raises(TypeError, match="PruningConfig"):
        PruningCallback("wanda", end_step=5)
    with pytest.raises(ValueError, match="carries none"):
        _train(_model(), PruningCallback(None), tmp_path / "keep", 1)
    first = PruningCallback(MagnitudeConfig(sparsity=0.5), end_step=2, frequency=1)
    _train(_model(), first, tmp_path / "r", 3, save_strategy="steps", save_steps=2)
    (tmp_path / "r" / "checkpoint-2" / STATE_FILE).unlink()
    with pytest.raises(ValueError, match="cannot be restored"):
        again = PruningCallback(MagnitudeConfig(sparsity=0.5), end_step=2, frequency=1)
        _train(_model(), again, tmp_path / "r", 3, resume=str(tmp_path / "r" / "checkpoint-2"))


def test_masks_stay_exactly_zero_under_bf16_autocast_and_clipping(tmp_path):
    model = _model()
    cb = PruningCallback(MagnitudeConfig(sparsity=0.7), schedule="constant", start_step=0)
    _train(model, cb, tmp_path, 4, bf16=True, max_grad_norm=0.5)
    assert [h["step"] for h in cb.history] == [0]  # magnitude needs no data: pruned before step 1
    for module in _layers(model).values():
        assert module.weight.dtype == torch.float32  # autocast, master weights stay fp32
        assert int((module.weight == 0).sum()) == round(0.7 * module.weight.numel())
