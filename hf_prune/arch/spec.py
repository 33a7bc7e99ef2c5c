"""Architecture specifications: where blocks, attention, MLP and norms live in each model family.

This is the only place in hf_prune that knows module paths such as ``model.layers`` or
``attention.self.query``. Everything else asks :func:`hf_prune.arch.get_arch` for a spec and walks
the model through it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hf_prune.registry import Registry


@dataclass(frozen=True)
class BlockSpec:
    """Module paths inside one transformer block, relative to the block.

    Args:
        attn: The attention module (the one that holds geometry attributes such as ``head_dim``).
        q: Query projection, or ``None`` when the family uses a fused ``qkv``.
        k: Key projection, or ``None`` with a fused ``qkv``.
        v: Value projection, or ``None`` with a fused ``qkv``.
        o: Attention output projection (its *input* is ``[..., n_heads * head_dim]``).
        mlp_in: MLP input projections whose *output* features are the neurons (gate and up, or fc1).
        mlp_out: MLP output projection whose *input* features are the neurons (down, or fc2).
        norms: Normalization modules of the block.
        qkv: Fused query/key/value projection (GPT-2 ``c_attn``), output laid out as ``[q | k | v]``.
    """

    attn: str
    q: str | None
    k: str | None
    v: str | None
    o: str
    mlp_in: tuple[str, ...]
    mlp_out: str
    norms: tuple[str, ...] = ()
    qkv: str | None = None

    def linear_paths(self) -> tuple[str, ...]:
        """Return every prunable projection of the block in forward order."""
        attn = (self.qkv,) if self.qkv else tuple(p for p in (self.q, self.k, self.v) if p)
        return (*attn, self.o, *self.mlp_in, self.mlp_out)


@dataclass(frozen=True)
class StackSpec:
    """One stack of identical blocks (a decoder, an encoder, a vision tower).

    Args:
        name: Stable name used in reports and in ``pruning_config.json`` (``"decoder"``).
        layers_path: Path of the ``nn.ModuleList`` of blocks, relative to ``model.base_model``.
        block: Module paths inside a block.
        config_path: Attribute of the top-level config holding this stack's config (``"text_config"``),
            or ``""`` for the top-level config itself.
        num_layers_key: Config key of the layer count.
        heads_key: Config key of the number of query heads.
        kv_heads_key: Config key of the number of key/value heads (GQA), ``None`` if heads are MHA.
        intermediate_key: Config key of the MLP width.
        head_dim_key: Config key that pins ``head_dim`` independently of the head count. When ``None``
            the family derives ``head_dim = hidden_size // num_heads``, so a pruned head count cannot
            be written into ``config.json`` without changing ``head_dim``; it goes into
            ``per_layer_config`` instead, which plain transformers refuses to build (a clear error,
            never a silent wrong shape).
        causal: Whether the blocks are causal decoder blocks (KV cache, ``generate``).
    """

    name: str
    layers_path: str
    block: BlockSpec
    config_path: str = ""
    num_layers_key: str = "num_hidden_layers"
    heads_key: str = "num_attention_heads"
    kv_heads_key: str | None = None
    intermediate_key: str = "intermediate_size"
    head_dim_key: str | None = None
    causal: bool = True


@dataclass(frozen=True)
class ArchSpec:
    """Everything hf_prune needs to know about one model family.

    Args:
        family: Family name (``"llama"``).
        model_types: ``config.model_type`` values handled by this spec.
        stacks: The block stacks of the model, in forward order.
    """

    family: str
    model_types: tuple[str, ...]
    stacks: tuple[StackSpec, ...] = field(default_factory=tuple)

    def stack(self, name: str) -> StackSpec:
        """Return the stack called ``name``.

        Args:
            name: A stack name of this family.

        Raises:
            ValueError: If the family has no such stack.
        """
        for s in self.stacks:
            if s.name == name:
                return s
        raise ValueError(
            f"Architecture {self.family!r} has no stack {name!r}; stacks: {[s.name for s in self.stacks]}."
        )


ARCHITECTURES: Registry[ArchSpec] = Registry("architecture")

_LLAMA_BLOCK = BlockSpec(
    attn="self_attn",
    q="self_attn.q_proj",
    k="self_attn.k_proj",
    v="self_attn.v_proj",
    o="self_attn.o_proj",
    mlp_in=("mlp.gate_proj", "mlp.up_proj"),
    mlp_out="mlp.down_proj",
    norms=("input_layernorm", "post_attention_layernorm"),
)


def _llama_like(family: str, model_types: tuple[str, ...], config_path: str = "") -> ArchSpec:
    return ArchSpec(
        family=family,
        model_types=model_types,
        stacks=(
            StackSpec(
                name="decoder",
                layers_path="layers",
                block=_LLAMA_BLOCK,
                config_path=config_path,
                kv_heads_key="num_key_value_heads",
                head_dim_key="head_dim",
            ),
        ),
    )


_BERT_BLOCK = BlockSpec(
    attn="attention.self",
    q="attention.self.query",
    k="attention.self.key",
    v="attention.self.value",
    o="attention.output.dense",
    mlp_in=("intermediate.dense",),
    mlp_out="output.dense",
    norms=("attention.output.LayerNorm", "output.LayerNorm"),
)

_CLIP_BLOCK = BlockSpec(
    attn="self_attn",
    q="self_attn.q_proj",
    k="self_attn.k_proj",
    v="self_attn.v_proj",
    o="self_attn.out_proj",
    mlp_in=("mlp.fc1",),
    mlp_out="mlp.fc2",
    norms=("layer_norm1", "layer_norm2"),
)

# Explicit registration: one line per family. To add a family, write its ArchSpec here (module paths
# from `print(model)`), register it, and add a tiny config to tests/conftest.py's family matrix.
for _spec in (
    _llama_like("llama", ("llama",)),
    _llama_like("mistral", ("mistral",)),
    _llama_like("qwen2", ("qwen2",)),
    _llama_like("gemma", ("gemma",)),
    ArchSpec(
        family="opt",
        model_types=("opt",),
        stacks=(
            StackSpec(
                name="decoder",
                layers_path="decoder.layers",
                block=BlockSpec(
                    attn="self_attn",
                    q="self_attn.q_proj",
                    k="self_attn.k_proj",
                    v="self_attn.v_proj",
                    o="self_attn.out_proj",
                    mlp_in=("fc1",),
                    mlp_out="fc2",
                    norms=("self_attn_layer_norm", "final_layer_norm"),
                ),
                intermediate_key="ffn_dim",
            ),
        ),
    ),
    ArchSpec(
        family="gpt2",
        model_types=("gpt2",),
        stacks=(
            StackSpec(
                name="decoder",
                layers_path="h",
                block=BlockSpec(
                    attn="attn",
                    q=None,
                    k=None,
                    v=None,
                    qkv="attn.c_attn",
                    o="attn.c_proj",
                    mlp_in=("mlp.c_fc",),
                    mlp_out="mlp.c_proj",
                    norms=("ln_1", "ln_2"),
                ),
                num_layers_key="n_layer",
                heads_key="n_head",
                intermediate_key="n_inner",
            ),
        ),
    ),
    ArchSpec(
        family="bert",
        model_types=("bert",),
        stacks=(StackSpec(name="encoder", layers_path="encoder.layer", block=_BERT_BLOCK, causal=False),),
    ),
    ArchSpec(
        family="roberta",
        model_types=("roberta",),
        stacks=(StackSpec(name="encoder", layers_path="encoder.layer", block=_BERT_BLOCK, causal=False),),
    ),
    ArchSpec(
        family="vit",
        model_types=("vit",),
        stacks=(
            StackSpec(
                name="encoder",
                layers_path="layers",
                block=BlockSpec(
                    attn="attention",
                    q="attention.q_proj",
                    k="attention.k_proj",
                    v="attention.v_proj",
                    o="attention.o_proj",
                    mlp_in=("mlp.fc1",),
                    mlp_out="mlp.fc2",
                    norms=("layernorm_before", "layernorm_after"),
                ),
                causal=False,
            ),
        ),
    ),
    ArchSpec(
        family="llava",
        model_types=("llava",),
        stacks=(
            StackSpec(
                name="vision_tower",
                layers_path="vision_tower.encoder.layers",
                block=_CLIP_BLOCK,
                config_path="vision_config",
                causal=False,
            ),
            StackSpec(
                name="language_model",
                layers_path="language_model.layers",
                block=_LLAMA_BLOCK,
                config_path="text_config",
                kv_heads_key="num_key_value_heads",
                head_dim_key="head_dim",
            ),
        ),
    ),
):
    ARCHITECTURES.register(_spec.family, _spec)
