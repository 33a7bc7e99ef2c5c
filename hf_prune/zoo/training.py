"""A plain, deterministic PyTorch training loop (AdamW, warm-up + cosine schedule, gradient clipping)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import nn
from tqdm.auto import tqdm

from hf_prune.utils import show_progress
from hf_prune.zoo.recipes import ZooRecipe


@contextmanager
def deterministic_build(seed: int, num_threads: int) -> Iterator[None]:
    """Run a block seeded, with deterministic algorithms and a fixed thread count; restore afterwards.

    The global RNG state, thread count and determinism flags are put back on exit so building a zoo
    model never changes the caller's process state.

    Args:
        seed: Seed for ``torch``'s global RNG inside the block.
        num_threads: ``torch`` intra-op threads inside the block.

    Yields:
        Nothing.
    """
    previous_threads = torch.get_num_threads()
    previous_deterministic = torch.are_deterministic_algorithms_enabled()
    previous_warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        torch.set_num_threads(num_threads)
        torch.use_deterministic_algorithms(True)
        try:
            yield
        finally:
            torch.use_deterministic_algorithms(previous_deterministic, warn_only=previous_warn_only)
            torch.set_num_threads(previous_threads)


def cosine_schedule(max_steps: int, warmup_steps: int, min_lr_ratio: float) -> Callable[[int], float]:
    """Return a ``LambdaLR`` factor: linear warm-up, then cosine decay to ``min_lr_ratio``.

    Args:
        max_steps: Total optimizer steps.
        warmup_steps: Warm-up steps (clipped to ``max_steps``).
        min_lr_ratio: Final factor.

    Returns:
        A function mapping a step index to the learning-rate factor.
    """
    warmup = min(warmup_steps, max_steps)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, max_steps - warmup)
        return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def make_optimizer(
    model: nn.Module, recipe: ZooRecipe, max_steps: int
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """Build AdamW (no decay on biases / norms / 1-D parameters) and its schedule.

    Args:
        model: The model to train.
        recipe: Supplies learning rate, weight decay and schedule settings.
        max_steps: Total optimizer steps.

    Returns:
        The optimizer and the learning-rate scheduler.
    """
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim < 2]
    optimizer = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": recipe.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=recipe.learning_rate,
        betas=(0.9, 0.95),
        eps=1e-8,
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, cosine_schedule(max_steps, recipe.warmup_steps, recipe.min_lr_ratio)
    )
    return optimizer, scheduler


def train_loop(
    model: nn.Module,
    recipe: ZooRecipe,
    max_steps: int,
    next_batch: Callable[[int], dict[str, torch.Tensor]],
    progress: bool = True,
    evaluate: Callable[[], float] | None = None,
    curve: list[dict[str, float]] | None = None,
) -> list[float]:
    """Train ``model`` for ``max_steps`` steps on batches from ``next_batch``.

    Args:
        model: A model whose call with the batch's keyword arguments returns an output with ``.loss``.
        recipe: Supplies the optimizer and clipping settings and ``eval_every``.
        max_steps: Optimizer steps.
        next_batch: Called with the step index; returns the model's keyword arguments.
        progress: Show a tqdm bar.
        evaluate: Called (model in eval mode, no gradients) every ``recipe.eval_every`` steps and after
            the last step; its value goes into ``curve``. It must not use the global RNG, so that the
            weights are the same with and without a curve.
        curve: List that receives ``{"step", "train_loss", "heldout"}`` points.

    Returns:
        The training loss of every step.
    """
    optimizer, scheduler = make_optimizer(model, recipe, max_steps)
    model.train()
    losses: list[float] = []
    bar = tqdm(range(max_steps), desc=f"train {recipe.name}", disable=not show_progress(progress))
    for step in bar:
        loss = model(**next_batch(step)).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), recipe.grad_clip)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
        if step % 10 == 0 or step == max_steps - 1:
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
        done = step + 1
        at_point = recipe.eval_every and (done % recipe.eval_every == 0 or done == max_steps)
        if evaluate is not None and at_point:
            model.eval()
            with torch.no_grad():
                value = evaluate()
            model.train()
            recent = losses[-min(len(losses), recipe.eval_every) :]
            if curve is not None:
                curve.append({"step": done, "train_loss": sum(recent) / len(recent), "heldout": value})
            if progress:
                bar.write(f"step {done}: held-out {value:.3f}")
    model.eval()
    return losses


def random_window_sampler(
    ids: torch.Tensor, seqlen: int, batch_size: int, seed: int
) -> Callable[[int], dict[str, torch.Tensor]]:
    """Return a ``next_batch`` drawing uniformly random ``seqlen`` windows from a token stream.

    A private ``torch.Generator`` keeps the data order independent of the model's RNG use.

    Args:
        ids: 1-D token stream.
        seqlen: Window length.
        batch_size: Windows per batch.
        seed: Seed of the data order.

    Returns:
        A function of the step index returning ``{"input_ids", "labels"}`` (labels are the inputs:
        ``transformers`` shifts them).

    Raises:
        ValueError: If the stream is shorter than one window.
    """
    if ids.numel() <= seqlen:
        raise ValueError(f"the training stream has {ids.numel()} tokens, not more than seqlen={seqlen}")
    generator = torch.Generator().manual_seed(seed)
    high = int(ids.numel()) - seqlen + 1

    def next_batch(step: int) -> dict[str, torch.Tensor]:
        del step  # The generator's state carries the position in the data order.
        offsets = torch.randint(0, high, (batch_size,), generator=generator).tolist()
        batch = torch.stack([ids[o : o + seqlen] for o in offsets])
        return {"input_ids": batch, "labels": batch}

    return next_batch


def round_to_dtype(model: nn.Module, dtype: str) -> None:
    """Round every floating-point parameter and buffer to ``dtype`` in place, keeping it in float32.

    The zoo stores weights in half precision; rounding before measuring makes the recorded metrics
    those of the stored weights, which load back (as float32) bit-identical to the rounded ones.

    Args:
        model: The model to round.
        dtype: ``"float32"`` (no-op), ``"float16"`` or ``"bfloat16"``.
    """
    target = getattr(torch, dtype)
    if target == torch.float32:
        return
    with torch.no_grad():
        for tensor in [*model.parameters(), *model.buffers()]:
            if tensor.is_floating_point():
                tensor.copy_(tensor.to(target).to(tensor.dtype))
