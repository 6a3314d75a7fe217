"""Tiny MoE models for expert-placement tests and reports: the zoo `moe` and HF MoE families.

Random weights from tiny configs (nothing downloaded). Each factory returns
`(model, example_inputs)` like the zoo, with an output of one tensor (HF logits), so
`kiln trace-experts benchmarks/expert_models.py:mixtral` and `kiln run` take them as they are.
"""

from __future__ import annotations

import torch
from torch import nn

VOCAB = 128


class Logits(nn.Module):
    """HF causal LM -> logits only (no cache objects), so outputs compare as tensors."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=ids, use_cache=False).logits


def _ids(batch: int = 2, seq: int = 16, seed: int = 1) -> tuple[torch.Tensor]:
    return (torch.randint(0, VOCAB, (batch, seq), generator=torch.Generator().manual_seed(seed)),)


def mixtral(layers: int = 2, experts: int = 8, seed: int = 0):
    """Mixtral-style: top-2 of `experts`, renormalized weights."""
    from transformers import MixtralConfig, MixtralForCausalLM

    cfg = MixtralConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=layers,
                        num_attention_heads=4, num_key_value_heads=2, num_local_experts=experts,
                        num_experts_per_tok=2, max_position_embeddings=128, use_cache=False)
    torch.manual_seed(seed)
    return Logits(MixtralForCausalLM(cfg)).eval(), _ids()


def qwen2_moe(layers: int = 2, experts: int = 8, seed: int = 0):
    """Qwen2-MoE-style: top-4 of `experts` plus a gated shared expert."""
    from transformers import Qwen2MoeConfig, Qwen2MoeForCausalLM

    cfg = Qwen2MoeConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=96, moe_intermediate_size=48,
                         shared_expert_intermediate_size=96, num_hidden_layers=layers, num_attention_heads=4,
                         num_key_value_heads=2, num_experts=experts, num_experts_per_tok=4,
                         max_position_embeddings=128, use_cache=False)
    torch.manual_seed(seed)
    return Logits(Qwen2MoeForCausalLM(cfg)).eval(), _ids()


class Seq2SeqLogits(nn.Module):
    """Encoder-decoder HF model -> logits, the same ids feeding encoder and decoder."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=ids, decoder_input_ids=ids, use_cache=False).logits


def switch(experts: int = 4, seed: int = 0):
    """Switch-Transformers-style: top-1 (argmax) routing, one sparse encoder and decoder layer."""
    from transformers import SwitchTransformersConfig, SwitchTransformersForConditionalGeneration

    cfg = SwitchTransformersConfig(vocab_size=VOCAB, d_model=32, d_kv=8, d_ff=64, num_layers=2,
                                   num_decoder_layers=2, num_heads=2, num_experts=experts,
                                   num_sparse_encoder_layers=1, num_sparse_decoder_layers=1, use_cache=False)
    torch.manual_seed(seed)
    return Seq2SeqLogits(SwitchTransformersForConditionalGeneration(cfg)).eval(), _ids()


def zoo_moe():
    from examples.zoo import moe

    return moe()
