"""The benchmark's PyTorch peers: the tiny LM and ViT presets rebuilt in PyTorch, trained eagerly.

Optional: used by `tinytf bench train` only when torch is installed (`pip install tinytf[bench]`);
tinytf itself never needs it. Same shapes, parameter counts (up to the fused projections),
optimizer (AdamW, b = (0.9, 0.95), linear warmup then cosine, global-norm clipping at 1) and
batch sizes as the JAX presets, so steps per second compare like with like.
"""

from __future__ import annotations

import math
import time


def available() -> bool:
    """True when PyTorch can be imported here."""
    try:
        import torch  # noqa: F401
    except Exception:  # not installed, or a build that cannot load on this machine
        return False
    return True


def _modules():
    import torch
    from torch import nn
    from torch.nn import functional as F

    class Block(nn.Module):
        """Pre-norm transformer block: x + attn(LN(x)), x + MLP(LN(x)) (GELU, tanh approximation)."""

        def __init__(self, d: int, heads: int, causal: bool):
            super().__init__()
            self.heads, self.causal = heads, causal
            self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)
            self.qkv, self.out = nn.Linear(d, 3 * d), nn.Linear(d, d)
            self.up, self.down = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)

        def forward(self, x):
            B, T, D = x.shape
            q, k, v = self.qkv(self.norm1(x)).view(B, T, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)
            a = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal)  # (B, N, T, H)
            x = x + self.out(a.transpose(1, 2).reshape(B, T, D))
            return x + self.down(F.gelu(self.up(self.norm2(x)), approximate="tanh"))

    class LM(nn.Module):
        def __init__(self, vocab=64, d=64, layers=2, heads=4, max_len=128):
            super().__init__()
            self.embed, self.pos = nn.Embedding(vocab, d), nn.Parameter(0.02 * torch.randn(max_len, d))
            self.blocks = nn.ModuleList([Block(d, heads, True) for _ in range(layers)])
            self.norm, self.head = nn.LayerNorm(d), nn.Linear(d, vocab, bias=False)

        def forward(self, tokens):
            x = self.embed(tokens) + self.pos[: tokens.shape[1]]
            for block in self.blocks:
                x = block(x)
            return self.head(self.norm(x))

    class ViT(nn.Module):
        def __init__(self, image=16, patch=4, d=64, layers=2, heads=4, classes=4):
            super().__init__()
            self.patch = patch
            self.proj = nn.Linear(patch * patch * 3, d)
            self.cls, self.pos = nn.Parameter(torch.zeros(1, 1, d)), nn.Parameter(
                0.02 * torch.randn(1 + (image // patch) ** 2, d))
            self.blocks = nn.ModuleList([Block(d, heads, False) for _ in range(layers)])
            self.norm, self.head = nn.LayerNorm(d), nn.Linear(d, classes)

        def forward(self, images):  # (B, H, W, C)
            B, Hh, W, C = images.shape
            p = self.patch
            x = images.view(B, Hh // p, p, W // p, p, C).permute(0, 1, 3, 2, 4, 5).reshape(B, -1, p * p * C)
            x = torch.cat([self.cls.expand(B, -1, -1), self.proj(x)], dim=1) + self.pos
            for block in self.blocks:
                x = block(x)
            return self.head(self.norm(x)[:, 0])

    return torch, F, LM, ViT


def attention_seconds(calls: list[tuple], *, repeats: int = 50, threads: int | None = None) -> float:
    """Best seconds of `F.scaled_dot_product_attention`'s forward + backward over `calls`, each
    (query shape (B, T, N, H), key shape (B, S, N, H), is_causal): PyTorch's fused attention at
    the shapes of a tinytf step's attention calls, to set beside `bench_train`'s own."""
    torch, F, _, _ = _modules()
    if threads is not None:
        torch.set_num_threads(threads)
    generator = torch.Generator().manual_seed(0)
    tensors = [(*(torch.randn(shape[0], shape[2], shape[1], shape[3], generator=generator, requires_grad=True)
                  for shape in (q, k, k)), causal) for q, k, causal in calls]  # (B, N, T, H) layout

    def run():
        for q, k, v, _ in tensors:  # fresh gradients each time, not accumulated ones
            q.grad = k.grad = v.grad = None
        total = sum(F.scaled_dot_product_attention(q, k, v, is_causal=causal).sum() for q, k, v, causal in tensors)
        total.backward()

    run()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - t0)
    return best


def train_rate(preset: str, *, steps: int = 200, repeats: int = 3, threads: int | None = None) -> dict:
    """Steps per second of eager PyTorch training of `preset` ("lm" or "vit"), best of `repeats`.

    Returns:
      {"steps_per_s", "parameters", "threads", "torch"}.
    """
    torch, F, LM, ViT = _modules()
    if threads is not None:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    if preset == "lm":
        model, batch = LM(), 32

        def make_batch():
            half = torch.randint(1, 64, (batch, 16))
            return torch.cat([half, half], dim=1)

        def loss_fn(tokens):
            logits = model(tokens[:, :-1])
            return F.cross_entropy(logits[:, 15:].reshape(-1, 64), tokens[:, 16:].reshape(-1))
    elif preset == "vit":
        model, batch = ViT(), 64

        def make_batch():
            return torch.rand(batch, 16, 16, 3), torch.randint(0, 4, (batch,))

        def loss_fn(b):
            return F.cross_entropy(model(b[0]), b[1])
    else:
        raise ValueError(f"preset must be 'lm' or 'vit', got {preset!r}")
    total = steps * (repeats + 1)
    decay = [p for p in model.parameters() if p.ndim >= 2]
    rest = [p for p in model.parameters() if p.ndim < 2]
    optimizer = torch.optim.AdamW([{"params": decay}, {"params": rest, "weight_decay": 0.0}], lr=3e-3,
                                  betas=(0.9, 0.95), weight_decay=0.0)
    warmup = max(1, total // 10)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(
        (s + 1) / warmup, 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(1.0, (s - warmup) / (total - warmup))))))

    def run(n):
        for _ in range(n):
            loss = loss_fn(make_batch())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()

    run(5)  # warm-up
    best = 0.0
    for _ in range(repeats):
        t0 = time.perf_counter()
        run(steps)
        best = max(best, steps / (time.perf_counter() - t0))
    return {"steps_per_s": best, "parameters": sum(p.numel() for p in model.parameters()),
            "threads": torch.get_num_threads(), "torch": torch.__version__}


__all__ = ["available", "train_rate"]
