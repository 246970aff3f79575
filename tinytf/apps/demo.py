"""`tinytf demo`: the smallest end-to-end look at attention.

Builds a 2-layer, 4-head causal transformer stack from tinytf's own layers,
feeds it a repeated random sequence, captures every layer's attention with
`capture_attention`, and saves a heads x layers grid of heatmaps as a PNG.
"""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
from flax import nnx

from tinytf.apps.args import nonnegative_int, writable_dir
from tinytf.capture import capture_attention
from tinytf.nn import Block
from tinytf.variants import get_variant


class _TinyStack(nnx.Module):
    def __init__(self, vocab: int, d_model: int, num_layers: int, num_heads: int, attention, *, rngs: nnx.Rngs):
        self.embed = nnx.Embed(vocab, d_model, rngs=rngs)
        self.blocks = nnx.List([Block(d_model, num_heads, attention=attention, rngs=rngs) for _ in range(num_layers)])

    def __call__(self, tokens):
        x = self.embed(tokens)
        for block in self.blocks:
            x = block(x, is_causal=True)
        return x


def run_demo(out_dir: str | Path = "runs/demo", *, variant: str | None = None, seed: int = 0) -> Path:
    """Capture the attention maps of an untrained tiny model and save them as a PNG.

    Returns:
      The path of the PNG.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    attention = get_variant(variant, base=get_variant("vanilla").replace(position="rope"))
    model = _TinyStack(16, 32, 2, 4, attention, rngs=nnx.Rngs(seed))
    half = jax.random.randint(jax.random.key(seed), (1, 8), 0, 16)
    tokens = jnp.concatenate([half, half], axis=1)  # (1, 16): a repeated sequence
    maps = capture_attention(model, tokens)
    layers = list(maps)
    heads = maps[layers[0]].shape[1]
    T = tokens.shape[1]
    fig, axes = plt.subplots(len(layers), heads, figsize=(2.4 * heads + 1.2, 2.6 * len(layers) + 0.8),
                             squeeze=False, sharex=True, sharey=True, layout="constrained")
    labels = [str(int(t)) for t in tokens[0]]
    for i, name in enumerate(layers):
        for h in range(heads):
            ax = axes[i, h]
            im = ax.imshow(maps[name][0, h], cmap="viridis", vmin=0, vmax=1)
            ax.axvline(T // 2 - 0.5, color="white", lw=0.8, ls=":")  # where the sequence repeats
            ax.axhline(T // 2 - 0.5, color="white", lw=0.8, ls=":")
            ax.set_title(f"layer {i}, head {h}", fontsize=9)
            ax.tick_params(labelsize=7, length=2)
    for ax in axes[:, 0]:  # token ids on the outer panels only (shared axes), one per position
        ax.set_yticks(range(T), labels)
        ax.set_ylabel("query token")
    for ax in axes[-1, :]:
        ax.set_xticks(range(T), labels, rotation=90)
        ax.set_xlabel("key token")
    fig.colorbar(im, ax=axes, shrink=0.8, label="attention weight")
    fig.suptitle("Attention of an untrained 2-layer model on a sequence of 8 random tokens repeated "
                 "(causal; dotted: where it repeats)", fontsize=10)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "attention.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _cmd_demo(args) -> int:
    path = run_demo(args.out, variant=args.variant, seed=args.seed)
    print(f"saved attention heatmaps of a tiny model to {path}")
    return 0


def register_cli(sub) -> None:
    p = sub.add_parser("demo", help="save attention heatmaps of a tiny model to a PNG")
    p.add_argument("--out", type=writable_dir, default="runs/demo", help="output directory (default runs/demo)")
    p.add_argument("--variant", default=None, help="attention variant name or module:function")
    p.add_argument("--seed", type=nonnegative_int, default=0)
    p.set_defaults(func=_cmd_demo)
