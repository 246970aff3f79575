"""Models built from `tinytf.nn`: a causal language model and a Vision Transformer.

`lm.CausalLM` (GPT-style, with a StreamingLLM KV cache) and `vit.ViT` (with register
tokens). Read `lm.py` first; `vit.py` reuses the same blocks on image patches.
"""

from tinytf.models.detr import DETR, DETRConfig
from tinytf.models.lm import CausalLM, LMConfig, streaming_forward, streaming_nll
from tinytf.models.registers import prepend_registers
from tinytf.models.retriever import NeedleRetriever, needle_slot
from tinytf.models.vit import PatchEmbed, ViT, ViTConfig

__all__ = ["LMConfig", "CausalLM", "streaming_forward", "streaming_nll",
           "ViTConfig", "ViT", "PatchEmbed", "DETRConfig", "DETR", "NeedleRetriever", "needle_slot", "prepend_registers"]
