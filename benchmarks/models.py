"""The real-model suite: architectures people actually compile, built from tiny configs.

Kiln's zoo (`examples/zoo.py`) is written for Kiln; these are not. Each entry builds a
Hugging Face transformers model (or a torch.nn model) from a small config with random
weights, so nothing is downloaded, and returns `(model, example_inputs)` like a zoo
factory. The models keep their own code paths (in-place residual adds, fused fast paths,
rotary embeddings, masks built from inputs, data-dependent control flow): that is what
makes them a test.

HF models take keyword arguments and return output objects; `Positional` adapts them to
positional tensors in and one tensor out (the first field of the output), which is how a
user calls a compiled model in a serving loop. Every factory seeds its own RNG.

`python -m benchmarks.coverage` runs the suite through every front door and target.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

Example = tuple[nn.Module, tuple[torch.Tensor, ...]]


class Positional(nn.Module):
    """Call an HF model with positional tensors bound to keyword names; return one tensor."""

    def __init__(self, model: nn.Module, keys: tuple[str, ...], field: str | None = None) -> None:
        super().__init__()
        self.model = model
        self.keys = keys
        self.field = field

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        out = self.model(**dict(zip(self.keys, tensors)))
        if self.field is not None:
            return getattr(out, self.field)
        return out[0] if isinstance(out, tuple) else out.to_tuple()[0]


@dataclass(frozen=True)
class RealModel:
    name: str
    family: str  # decoder, encoder, enc-dec, moe, vision, audio, multimodal, torch.nn
    build: Callable[[], Example]
    smoke: bool = False  # in the default test run's fast subset
    triton: bool = False  # run through Triton's interpreter in the coverage table


def _seeded(build: Callable[[], Example], seed: int = 0) -> Callable[[], Example]:
    def factory() -> Example:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model, inputs = build()
        return model.eval(), inputs

    factory.__name__ = build.__name__
    return factory


def _tokens(batch: int = 2, seq: int = 16, vocab: int = 512) -> torch.Tensor:
    return torch.randint(0, vocab, (batch, seq))


def _lm(config_cls: str, model_cls: str, **config) -> Callable[[], Example]:
    """A causal LM from a tiny config: token ids in, logits out."""

    def build() -> Example:
        import transformers

        cfg = getattr(transformers, config_cls)(use_cache=False, vocab_size=512, **config)
        model = getattr(transformers, model_cls)(cfg)
        return Positional(model, ("input_ids",), "logits"), (_tokens(),)

    build.__name__ = model_cls
    return build


def _encoder(config_cls: str, model_cls: str, **config) -> Callable[[], Example]:
    """An encoder: token ids and attention mask in, last hidden state out."""

    def build() -> Example:
        import transformers

        cfg = getattr(transformers, config_cls)(vocab_size=512, **config)
        model = getattr(transformers, model_cls)(cfg)
        ids = _tokens()
        mask = torch.ones_like(ids)
        mask[1, -4:] = 0  # one padded row, so the mask is not all ones
        return Positional(model, ("input_ids", "attention_mask"), "last_hidden_state"), (ids, mask)

    build.__name__ = model_cls
    return build


def _vision(config_cls: str, model_cls: str, size: int = 32, channels: int = 3, **config) -> Callable[[], Example]:
    def build() -> Example:
        import transformers

        cfg = getattr(transformers, config_cls)(**config)
        model = getattr(transformers, model_cls)(cfg)
        pixels = torch.randn(2, channels, size, size)
        return Positional(model, ("pixel_values",), "last_hidden_state"), (pixels,)

    build.__name__ = model_cls
    return build


SMALL_LM = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4)
SMALL_BERT = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                  max_position_embeddings=64)


def _t5() -> Example:
    from transformers import T5Config, T5Model

    cfg = T5Config(vocab_size=512, d_model=64, d_kv=16, d_ff=128, num_layers=2, num_heads=4, use_cache=False)
    keys = ("input_ids", "decoder_input_ids")
    return Positional(T5Model(cfg), keys, "last_hidden_state"), (_tokens(), _tokens(seq=8))


def _bart() -> Example:
    from transformers import BartConfig, BartModel

    cfg = BartConfig(vocab_size=512, d_model=64, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
                     decoder_attention_heads=4, encoder_ffn_dim=128, decoder_ffn_dim=128,
                     max_position_embeddings=64, use_cache=False)
    keys = ("input_ids", "decoder_input_ids")
    return Positional(BartModel(cfg), keys, "last_hidden_state"), (_tokens(), _tokens(seq=8))


def _switch() -> Example:
    """Switch Transformer's encoder: top-1 routing over 4 experts."""
    from transformers import SwitchTransformersConfig, SwitchTransformersEncoderModel

    cfg = SwitchTransformersConfig(vocab_size=512, d_model=64, d_kv=16, d_ff=128, num_layers=2, num_heads=4,
                                   num_experts=4, encoder_sparse_step=1, use_cache=False)
    return Positional(SwitchTransformersEncoderModel(cfg), ("input_ids",), "last_hidden_state"), (_tokens(),)


def _whisper_encoder() -> Example:
    from transformers import WhisperConfig, WhisperModel

    cfg = WhisperConfig(vocab_size=512, d_model=64, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
                        decoder_attention_heads=4, encoder_ffn_dim=128, decoder_ffn_dim=128, num_mel_bins=16,
                        max_source_positions=32, use_cache=False, pad_token_id=0,
                        bos_token_id=1, eos_token_id=2, decoder_start_token_id=1)
    encoder = WhisperModel(cfg).get_encoder()
    return Positional(encoder, ("input_features",), "last_hidden_state"), (torch.randn(2, 16, 64),)


def _wav2vec2() -> Example:
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    cfg = Wav2Vec2Config(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
                         conv_dim=(32, 32), conv_stride=(5, 2), conv_kernel=(10, 3), num_conv_pos_embeddings=16,
                         num_conv_pos_embedding_groups=4, do_stable_layer_norm=True)
    return Positional(Wav2Vec2Model(cfg), ("input_values",), "last_hidden_state"), (torch.randn(2, 800),)


def _clip() -> Example:
    from transformers import CLIPConfig, CLIPModel

    text = dict(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                max_position_embeddings=32)
    vision = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, image_size=32,
                  patch_size=8)
    cfg = CLIPConfig(text_config=text, vision_config=vision, projection_dim=32)
    keys = ("input_ids", "pixel_values")
    return Positional(CLIPModel(cfg), keys, "logits_per_image"), (_tokens(seq=12), torch.randn(2, 3, 32, 32))


# --- torch.nn models ---------------------------------------------------------------------


def _nn_encoder() -> Example:
    layer = nn.TransformerEncoderLayer(64, 4, 128, dropout=0.0, batch_first=True)
    return nn.TransformerEncoder(layer, 2, enable_nested_tensor=False), (torch.randn(2, 16, 64),)


def _nn_decoder() -> Example:
    layer = nn.TransformerDecoderLayer(64, 4, 128, dropout=0.0, batch_first=True)
    return nn.TransformerDecoder(layer, 2), (torch.randn(2, 8, 64), torch.randn(2, 16, 64))


class _Recurrent(nn.Module):
    def __init__(self, cell: type[nn.RNNBase]) -> None:
        super().__init__()
        self.rnn = cell(32, 64, num_layers=2, batch_first=True)
        self.head = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(x)
        return self.head(out[:, -1])


class _DataDependent(nn.Module):
    """Control flow on a tensor's value: Dynamo splits the graph at the branch."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(64, 64)
        self.b = nn.Linear(64, 64)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.a(x))
        if h.sum() > 0:
            return self.b(h)
        return -self.b(h)


class _Unlowerable(nn.Module):
    """A linear, then an op no backend lowers (grid sampling), then a linear."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(16, 16)
        self.b = nn.Linear(16, 16)

    def forward(self, x: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
        h = self.a(x)
        h = nn.functional.grid_sample(h, grid, align_corners=False)
        return self.b(h)


SUITE: tuple[RealModel, ...] = (
    # decoder LMs
    RealModel("gpt2", "decoder", _lm("GPT2Config", "GPT2LMHeadModel", n_embd=64, n_layer=2, n_head=4,
                                     n_positions=64), smoke=True, triton=True),
    RealModel("gpt-neox", "decoder", _lm("GPTNeoXConfig", "GPTNeoXForCausalLM", **SMALL_LM,
                                         max_position_embeddings=64), triton=True),
    RealModel("opt", "decoder", _lm("OPTConfig", "OPTForCausalLM", hidden_size=64, ffn_dim=128, num_hidden_layers=2,
                                    num_attention_heads=4, word_embed_proj_dim=64, max_position_embeddings=64)),
    RealModel("llama", "decoder", _lm("LlamaConfig", "LlamaForCausalLM", **SMALL_LM, num_key_value_heads=2),
              smoke=True, triton=True),
    RealModel("mistral", "decoder", _lm("MistralConfig", "MistralForCausalLM", **SMALL_LM, num_key_value_heads=2)),
    RealModel("qwen2", "decoder", _lm("Qwen2Config", "Qwen2ForCausalLM", **SMALL_LM, num_key_value_heads=2),
              triton=True),
    RealModel("phi3", "decoder", _lm("Phi3Config", "Phi3ForCausalLM", **SMALL_LM, pad_token_id=0)),
    RealModel("gemma", "decoder", _lm("GemmaConfig", "GemmaForCausalLM", **SMALL_LM, num_key_value_heads=1,
                                      head_dim=16)),
    # encoders
    RealModel("bert", "encoder", _encoder("BertConfig", "BertModel", **SMALL_BERT), smoke=True, triton=True),
    RealModel("roberta", "encoder", _encoder("RobertaConfig", "RobertaModel", **SMALL_BERT)),
    RealModel("distilbert", "encoder", _encoder("DistilBertConfig", "DistilBertModel", dim=64, hidden_dim=128,
                                                n_layers=2, n_heads=4, max_position_embeddings=64), smoke=True),
    RealModel("albert", "encoder", _encoder("AlbertConfig", "AlbertModel", **SMALL_BERT, embedding_size=32)),
    RealModel("electra", "encoder", _encoder("ElectraConfig", "ElectraModel", **SMALL_BERT, embedding_size=32)),
    RealModel("deberta-v2", "encoder", _encoder("DebertaV2Config", "DebertaV2Model", **SMALL_BERT)),
    # encoder-decoders
    RealModel("t5", "enc-dec", _t5, smoke=True),
    RealModel("bart", "enc-dec", _bart),
    # mixture of experts
    RealModel("mixtral", "moe", _lm("MixtralConfig", "MixtralForCausalLM", **SMALL_LM, num_key_value_heads=2,
                                    num_local_experts=4, num_experts_per_tok=2), smoke=True, triton=True),
    RealModel("qwen2-moe", "moe", _lm("Qwen2MoeConfig", "Qwen2MoeForCausalLM", **SMALL_LM, num_key_value_heads=2,
                                      num_experts=8, num_experts_per_tok=2, moe_intermediate_size=64,
                                      shared_expert_intermediate_size=128), triton=True),
    RealModel("switch", "moe", _switch),
    # vision
    RealModel("vit", "vision", _vision("ViTConfig", "ViTModel", image_size=32, patch_size=8, **SMALL_BERT),
              smoke=True, triton=True),
    RealModel("deit", "vision", _vision("DeiTConfig", "DeiTModel", image_size=32, patch_size=8, **SMALL_BERT)),
    RealModel("swin", "vision", _vision("SwinConfig", "SwinModel", image_size=32, patch_size=4, embed_dim=16,
                                        depths=(1, 1), num_heads=(2, 2), window_size=4)),
    RealModel("convnext", "vision", _vision("ConvNextConfig", "ConvNextModel", hidden_sizes=(16, 32),
                                            depths=(1, 1), num_stages=2)),
    RealModel("resnet", "vision", _vision("ResNetConfig", "ResNetModel", embedding_size=16, hidden_sizes=(16, 32),
                                          depths=(1, 1)), smoke=True, triton=True),
    RealModel("mobilenet-v2", "vision", _vision("MobileNetV2Config", "MobileNetV2Model", depth_multiplier=0.35,
                                                image_size=32), smoke=True),
    RealModel("efficientnet", "vision", _vision("EfficientNetConfig", "EfficientNetModel", image_size=32,
                                                width_coefficient=0.25, depth_coefficient=0.25, hidden_dim=320)),
    RealModel("regnet", "vision", _vision("RegNetConfig", "RegNetModel", embedding_size=16,
                                          hidden_sizes=(16, 32), depths=(1, 1), groups_width=8)),
    # audio and multimodal
    RealModel("whisper-encoder", "audio", _whisper_encoder, triton=True),
    RealModel("wav2vec2", "audio", _wav2vec2),
    RealModel("clip", "multimodal", _clip),
    # torch.nn
    RealModel("nn-transformer-encoder", "torch.nn", _nn_encoder, smoke=True),
    RealModel("nn-transformer-decoder", "torch.nn", _nn_decoder),
    RealModel("lstm", "torch.nn", lambda: (_Recurrent(nn.LSTM), (torch.randn(2, 12, 32),))),
    RealModel("gru", "torch.nn", lambda: (_Recurrent(nn.GRU), (torch.randn(2, 12, 32),))),
    RealModel("data-dependent", "torch.nn", lambda: (_DataDependent(), (torch.randn(4, 64),)), smoke=True),
    RealModel("unlowerable-op", "torch.nn",
              lambda: (_Unlowerable(), (torch.randn(1, 2, 8, 16), torch.rand(1, 8, 16, 2) * 2 - 1)), smoke=True),
)

BY_NAME = {m.name: m for m in SUITE}


def build(name: str) -> Example:
    """The model and inputs of one suite entry, seeded (identical on every call)."""
    try:
        entry = BY_NAME[name]
    except KeyError:
        raise KeyError(f"no real model {name!r}; known: {', '.join(BY_NAME)}") from None
    return _seeded(entry.build)()


def __getattr__(name: str) -> Callable[[], Example]:
    """Each suite entry as a factory, for the CLI: `kiln compile benchmarks/models.py:gpt_neox`."""
    key = name.replace("_", "-")
    if key in BY_NAME:
        return lambda: build(key)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *(m.name.replace("-", "_") for m in SUITE)])
