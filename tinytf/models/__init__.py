"""Models built from `tinytf.nn`: a causal language model and a Vision Transformer.

`lm.CausalLM` (GPT-style, with a StreamingLLM KV cache) and `vit.ViT` (with register
tokens). Read `lm.py` first; `vit.py` reuses the same blocks on image patches; `small.py`
has an attention-only LM and a CLS sequence classifier for the lessons on heads.
"""

from tinytf.models.detr import DETR, DETRConfig
from tinytf.models.lm import CausalLM, LMConfig, streaming_forward, streaming_nll
from tinytf.models.registers import prepend_registers
from tinytf.models.retriever import NeedleRetriever, needle_slot
from tinytf.models.small import AttentionOnlyLM, SequenceClassifier
from tinytf.models.vit import LinearPatchEmbed, PatchEmbed, ViT, ViTConfig, patchify, unpatchify

__all__ = ["LMConfig", "CausalLM", "streaming_forward", "streaming_nll",
           "ViTConfig", "ViT", "PatchEmbed", "LinearPatchEmbed", "patchify", "unpatchify", "DETRConfig", "DETR", "NeedleRetriever", "needle_slot",
           "AttentionOnlyLM", "SequenceClassifier", "prepend_registers"]
