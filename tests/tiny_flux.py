"""Build a tiny, randomly initialised Flux pipeline on disk, for tests and the CPU bench run.

Every part a real ``FluxPipeline`` folder has is here, only small: a 1+1 block transformer, a VAE
with four levels (so the size multiple is 16, as for real Flux), CLIP and T5 text encoders of one or
two layers, and tokenizers made from a vocabulary written here (nothing is downloaded). Weights come
from a fixed torch seed, so two builds give the same model.

    from tests.tiny_flux import build_tiny_flux
    folder = build_tiny_flux(tmp_path / "tiny-flux")   # -> a folder FluxPipeline.from_pretrained reads

:func:`tiny_lora_state_dict` makes a matching LoRA (PEFT/diffusers key names) for the transformer's
attention projections, and :func:`save_lora` writes one as safetensors.
"""

from __future__ import annotations

import string
from pathlib import Path

__all__ = ["TINY_HIDDEN", "build_tiny_flux", "tiny_tokenizers", "tiny_lora_state_dict", "save_lora", "ATTENTION_TARGETS"]

#: Width of the tiny transformer (num_attention_heads * attention_head_dim); also the T5 width.
TINY_HIDDEN = 32
_CLIP_HIDDEN = 32

#: Attention projections of every transformer block a LoRA made here targets.
ATTENTION_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")


def _clip_tokenizer():
    """A CLIP BPE tokenizer over single characters (no merges): every word spells out letter by letter."""
    from transformers import CLIPTokenizer

    specials = ["<|startoftext|>", "<|endoftext|>"]
    chars = list(string.ascii_lowercase + string.digits + string.punctuation)
    vocab: dict[str, int] = {}
    for token in specials + chars + [c + "</w>" for c in chars]:
        vocab.setdefault(token, len(vocab))
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)


def _t5_tokenizer():
    """A T5 unigram tokenizer over single characters and a few whole words."""
    from transformers import T5Tokenizer

    pieces = ["<pad>", "</s>", "<unk>", "▁"]
    pieces += ["▁" + c for c in string.ascii_lowercase]
    pieces += list(string.ascii_lowercase + string.digits + string.punctuation)
    pieces += ["▁a", "▁cat", "▁dog", "▁fox", "▁red", "▁blue", "▁in", "▁the", "▁snow"]
    vocab = [(piece, -float(len(piece))) for piece in dict.fromkeys(pieces)]
    return T5Tokenizer(vocab=vocab, extra_ids=0, model_max_length=512)


def tiny_tokenizers():
    """``(clip_tokenizer, t5_tokenizer)`` over a small vocabulary made here (no files, no downloads)."""
    return _clip_tokenizer(), _t5_tokenizer()


def build_tiny_flux(folder: str | Path, *, seed: int = 0):
    """Write a tiny random ``FluxPipeline`` to ``folder`` (created) and return the folder as a Path."""
    import torch
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    folder = Path(folder)
    tokenizer, tokenizer_2 = tiny_tokenizers()

    torch.manual_seed(seed)
    transformer = FluxTransformer2DModel(
        patch_size=1,
        in_channels=16,  # 4 latent channels packed 2x2
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=TINY_HIDDEN,
        pooled_projection_dim=_CLIP_HIDDEN,
        guidance_embeds=True,
        axes_dims_rope=(4, 4, 8),  # sums to attention_head_dim
    )
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=_CLIP_HIDDEN,
            intermediate_size=37,
            num_attention_heads=4,
            num_hidden_layers=2,
            projection_dim=_CLIP_HIDDEN,
            max_position_embeddings=77,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            hidden_act="gelu",
        )
    )
    text_encoder_2 = T5EncoderModel(
        T5Config(
            vocab_size=len(tokenizer_2),
            d_model=TINY_HIDDEN,
            d_kv=8,
            d_ff=37,
            num_layers=1,
            num_heads=4,
            relative_attention_num_buckets=8,
            pad_token_id=tokenizer_2.pad_token_id,
            eos_token_id=tokenizer_2.eos_token_id,
            decoder_start_token_id=tokenizer_2.pad_token_id,
        )
    )
    # Four levels -> vae_scale_factor 8, so sizes round to multiples of 16 as with the real model.
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(4, 4, 4, 4),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=1,
        sample_size=32,
        use_quant_conv=False,
        use_post_quant_conv=False,
        shift_factor=0.0609,
        scaling_factor=1.5035,
    )
    pipe = FluxPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(),
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        text_encoder_2=text_encoder_2,
        tokenizer_2=tokenizer_2,
        transformer=transformer,
    )
    folder.mkdir(parents=True, exist_ok=True)
    pipe.save_pretrained(folder, safe_serialization=True)
    return folder


def tiny_lora_state_dict(
    *,
    rank: int = 4,
    seed: int = 1,
    in_features: int = TINY_HIDDEN,
    out_features: int = TINY_HIDDEN,
    std: float = 0.5,
) -> dict:
    """A LoRA for the tiny transformer's attention projections, in PEFT/diffusers key naming.

    Keys look like ``transformer.transformer_blocks.0.attn.to_q.lora_A.weight``. Pass other
    ``in_features``/``out_features`` to make one that does not fit the model.
    """
    import torch

    gen = torch.Generator().manual_seed(seed)
    state: dict = {}
    modules = [f"transformer_blocks.0.attn.{t}" for t in ATTENTION_TARGETS]
    modules += [f"single_transformer_blocks.0.attn.{t}" for t in ("to_q", "to_k", "to_v")]
    for module in modules:
        state[f"transformer.{module}.lora_A.weight"] = torch.randn(rank, in_features, generator=gen) * std
        state[f"transformer.{module}.lora_B.weight"] = torch.randn(out_features, rank, generator=gen) * std
    return state


def save_lora(path: str | Path, state_dict: dict) -> Path:
    """Write a LoRA state dict as a ``.safetensors`` file and return its path."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in state_dict.items()}, str(path))
    return path
