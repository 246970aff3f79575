"""Synthetic sequence tasks for the lessons, generated on device with ``jax.random``.

Five small tasks, each one the smallest setting in which an attention phenomenon shows up:

1. ``copy_task`` -- random tokens, then the same tokens again: solving the second half needs
   an induction head (Olsson et al. 2022); the entropy-collapse lesson trains on it.
2. ``associative_recall`` -- key/value pairs, then a query key: predict its value.
3. ``needle_haystack`` -- n (key, value) items with near-miss distractors and one needle;
   attention to the needle fades as n grows (Nakanishi 2025, "Scalable-Softmax").
4. ``make_bigram_backcopy_task`` / ``sample_bigram_backcopy`` -- Guo et al. 2024's
   Bigram-Backcopy process, in which attention sinks emerge in 1-2 layer models.
5. ``counting_task`` -- a CLS classifier: are there more As than Bs? (head pruning,
   attention-as-explanation; Michel et al. 2019).

Conventions (read once, they hold for every generator here):
- Every generator is a pure function of a JAX key; configuration is keyword-only and static
  (Python ints/floats), so under ``jax.jit`` close over it::

      sample = jax.jit(functools.partial(copy_task, batch_size=32))
      batch = sample(jax.random.key(0))          # or call it inside a lax.scan training loop

- Results are dicts of batch-first arrays. Language-model tasks return
  ``tokens (B, T) int32``, ``targets (B, T) int32`` with ``targets[:, t] = tokens[:, t + 1]``
  (the last column is padding 0) and ``loss_mask (B, T) bool`` aligned with ``targets``:
  True where predicting ``targets[:, t]`` from ``tokens[:, :t + 1]`` is scored (the last
  column is always False). Hence, for ``logits = model(tokens)`` of shape (B, T, V)::

      nll = optax.softmax_cross_entropy_with_integer_labels(logits, batch["targets"])
      loss = (nll * batch["loss_mask"]).sum() / batch["loss_mask"].sum()

  which is the same as scoring ``logits[:, :-1]`` against ``tokens[:, 1:]`` with
  ``loss_mask[:, :-1]``.
- A BOS token, where a task has one, is the extra id just past the task's own vocabulary.

Read in order: helpers, copy, associative recall, needle, Bigram-Backcopy, counting.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from tinytf.checks import check_int, check_key, check_prob
from tinytf.data._compiled import compiled


def _next_token_targets(tokens: jax.Array) -> jax.Array:
    """targets[:, t] = tokens[:, t + 1]; the last column, which has no next token, is 0."""
    return jnp.concatenate([tokens[:, 1:], jnp.zeros_like(tokens[:, :1])], axis=1)  # (B, T)


def _randint_excluding(key: jax.Array, shape: tuple[int, ...], n: int, excluded: jax.Array) -> jax.Array:
    """Uniform integers in [0, n) other than ``excluded`` (broadcast against ``shape``)."""
    r = jax.random.randint(key, shape, 0, n - 1)  # n - 1 choices ...
    return (r + (r >= excluded)).astype(jnp.int32)  # ... shifted past the excluded value


def _random_subset(key: jax.Array, batch_size: int, n: int, k: int) -> jax.Array:
    """(batch_size, k) distinct integers from [0, n) per row: the prefix of a random permutation."""
    return jnp.argsort(jax.random.uniform(key, (batch_size, n)), axis=1)[:, :k].astype(jnp.int32)


# ----------------------------------------------------------------------------------------------
# 1. Copy / repeated sequence (induction)
# ----------------------------------------------------------------------------------------------


@compiled
def copy_task(key, *, batch_size: int, length: int = 16, vocab_size: int = 64, bos: bool = False,
              distinct: bool = False) -> dict[str, jax.Array]:
    """Random tokens followed by the same tokens again; the loss is on the repeated half.

    Predicting the second half needs an induction head: find the earlier occurrence of the
    current token and copy the one after it (Olsson et al. 2022, "In-context learning and
    induction heads"). ``length=16, vocab_size=64`` (T = 32) is a good small setting.

    Args:
      key: a JAX random key.
      batch_size: B.
      length: L, tokens per half.
      vocab_size: V; tokens are drawn uniformly from [0, V).
      bos: prepend a BOS token with id V (the model then needs V + 1 embeddings).
      distinct: draw the first half without repetition (needs L <= V), so that every
        copied token has exactly one earlier occurrence to look up.

    Returns:
      dict with ``tokens (B, T) int32`` where T = 2L (+1 with BOS), ``targets (B, T) int32``
      and ``loss_mask (B, T) bool`` (True exactly where ``targets`` is a token of the second
      half: L positions).
    """
    check_key(key)
    batch_size = check_int("batch_size", batch_size, low=1)
    length = check_int("length", length, low=1)
    vocab_size = check_int("vocab_size", vocab_size, low=2)
    if distinct and length > vocab_size:
        raise ValueError(f"distinct=True needs length <= vocab_size, got length={length}, vocab_size={vocab_size}")

    if distinct:
        first = _random_subset(key, batch_size, vocab_size, length)  # (B, L)
    else:
        first = jax.random.randint(key, (batch_size, length), 0, vocab_size, dtype=jnp.int32)
    parts = [first, first]
    if bos:
        parts.insert(0, jnp.full((batch_size, 1), vocab_size, jnp.int32))
    tokens = jnp.concatenate(parts, axis=1)  # (B, T)
    T = tokens.shape[1]
    copy_start = T - length  # index of the first repeated token
    t = jnp.arange(T)
    loss_mask = (t >= copy_start - 1) & (t < T - 1)  # targets[t] = tokens[t + 1] is repeated
    return {
        "tokens": tokens,
        "targets": _next_token_targets(tokens),
        "loss_mask": jnp.broadcast_to(loss_mask, (batch_size, T)),
    }


@compiled
def variable_copy_task(key, *, batch_size: int, min_length: int = 6, max_length: int = 16,
                       vocab_size: int = 64) -> dict[str, jax.Array]:
    """Two copies of L distinct random tokens, L drawn per sequence, then padding.

    Because L varies from sequence to sequence, no head can predict the second copy by
    looking a fixed distance back: the model has to find the earlier occurrence of the
    current token by content and copy the token after it, which is what an induction
    head does (Olsson et al. 2022, "In-context learning and induction heads").

    Args:
      key: a JAX random key.
      batch_size: B.
      min_length, max_length: L is uniform in [min_length, max_length]; T = 2 max_length.
      vocab_size: V; tokens from [0, V), padding is id V (the model needs V + 1 embeddings).

    Returns:
      dict with ``tokens (B, T) int32`` (copy 1 at 0..L-1, copy 2 at L..2L-1, then V),
      ``targets`` (the next token), ``loss_mask (B, T) bool`` (True where the target is
      token 1..L-1 of the second copy: the first token of a copy cannot be predicted) and
      ``length (B,) int32``.
    """
    check_key(key)
    batch_size = check_int("batch_size", batch_size, low=1)
    min_length = check_int("min_length", min_length, low=1)
    max_length = check_int("max_length", max_length, low=min_length)
    vocab_size = check_int("vocab_size", vocab_size, low=2)
    if vocab_size < max_length:
        raise ValueError(f"vocab_size={vocab_size} < max_length={max_length}: the tokens of a copy are distinct, "
                         "so expected vocab_size >= max_length")
    k_len, k_tok = jax.random.split(key)
    length = jax.random.randint(k_len, (batch_size, 1), min_length, max_length + 1)  # (B, 1)
    first = _random_subset(k_tok, batch_size, vocab_size, max_length)  # (B, max L) distinct tokens
    T = 2 * max_length
    t = jnp.arange(T)[None]  # (1, T)
    tokens = jnp.where(t < 2 * length, jnp.take_along_axis(first, t % length, axis=1), vocab_size).astype(jnp.int32)
    loss_mask = (t >= length) & (t < 2 * length - 1)  # targets are second-copy tokens 1..L-1
    return {"tokens": tokens, "targets": _next_token_targets(tokens), "loss_mask": loss_mask,
            "length": length[:, 0].astype(jnp.int32)}


# ----------------------------------------------------------------------------------------------
# 2. Associative recall
# ----------------------------------------------------------------------------------------------


@compiled
def associative_recall(key, *, batch_size: int, num_pairs: int = 8, num_keys: int = 16, num_values: int = 16,
                       bos: bool = False) -> dict[str, jax.Array]:
    """``k1 v1 k2 v2 ... kP vP q a``: after the query key q, predict its value a.

    The classic recall probe for sequence models (Ba et al. 2016; Zoology, Arora et al. 2023).
    Keys are distinct within a sequence. Vocabulary: keys are ids [0, K), values
    [K, K + V), BOS (if any) is K + V; the model needs K + V (+1) embeddings.

    Args:
      key: a JAX random key.
      batch_size: B.
      num_pairs: P, key/value pairs per sequence (P <= num_keys).
      num_keys: K, size of the key vocabulary.
      num_values: V, size of the value vocabulary.
      bos: prepend a BOS token.

    Returns:
      dict with ``tokens (B, T) int32`` (T = 2P + 2, +1 with BOS; ``tokens[:, -2]`` is the
      query and ``tokens[:, -1]`` the answer), ``targets (B, T)``, ``loss_mask (B, T) bool``
      (True only at column T - 2, whose target is the answer), ``query (B,) int32`` (key id),
      ``answer (B,) int32`` (value token id in [K, K + V)) and ``pair_index (B,) int32``
      (which pair was queried).
    """
    check_key(key)
    batch_size = check_int("batch_size", batch_size, low=1)
    num_keys = check_int("num_keys", num_keys, low=1)
    num_pairs = check_int("num_pairs", num_pairs, low=1, high=num_keys)
    num_values = check_int("num_values", num_values, low=1)

    k_keys, k_values, k_query = jax.random.split(key, 3)
    keys = _random_subset(k_keys, batch_size, num_keys, num_pairs)  # (B, P), distinct per row
    values = num_keys + jax.random.randint(k_values, (batch_size, num_pairs), 0, num_values, dtype=jnp.int32)
    pair_index = jax.random.randint(k_query, (batch_size,), 0, num_pairs, dtype=jnp.int32)
    query = jnp.take_along_axis(keys, pair_index[:, None], axis=1)  # (B, 1)
    answer = jnp.take_along_axis(values, pair_index[:, None], axis=1)  # (B, 1)
    pairs = jnp.stack([keys, values], axis=2).reshape(batch_size, 2 * num_pairs)  # (B, P, 2) -> (B, 2P)
    parts = [pairs, query, answer]
    if bos:
        parts.insert(0, jnp.full((batch_size, 1), num_keys + num_values, jnp.int32))
    tokens = jnp.concatenate(parts, axis=1)  # (B, T)
    T = tokens.shape[1]
    loss_mask = jnp.broadcast_to(jnp.arange(T) == T - 2, (batch_size, T))
    return {
        "tokens": tokens,
        "targets": _next_token_targets(tokens),
        "loss_mask": loss_mask,
        "query": query[:, 0],
        "answer": answer[:, 0],
        "pair_index": pair_index,
    }


# ----------------------------------------------------------------------------------------------
# 3. Needle in a haystack with near-miss distractors
# ----------------------------------------------------------------------------------------------


@compiled
def needle_haystack(key, *, batch_size: int, max_items: int, min_items: int | None = None, num_subkeys: int = 8,
                    num_values: int = 16, near_miss_prob: float = 0.8, filler_prob: float = 0.9
                    ) -> dict[str, jax.Array]:
    """A haystack of n (key, value) items, one of which (the needle) carries the query key.

    Keys are pairs (a, b) of sub-keys in [0, S) (S x S = 64 keys by default). Each distractor
    is, with probability ``near_miss_prob``, a *near miss* sharing exactly one sub-key with
    the needle (which one: 50/50), otherwise it shares neither; so exactly one item matches
    the query. A distractor's value is the filler class 0 with probability ``filler_prob``,
    otherwise uniform over [1, V); the needle's value is uniform over [0, V). The target is
    the needle's value. Embed items compositionally (E_a(a) + E_b(b) + E_v(v)) for the near
    misses to bite. This is the retrieval toy of the `dilution` lesson (attention fading with
    context length; Nakanishi 2025, arXiv 2501.19399).

    Items live in a fixed-length padded array of ``max_items`` (M) slots: the first n are
    real (``valid``), the rest are padding with key (0, 0) and value 0 -- mask them. n is
    drawn per example uniformly from [min_items, max_items] (train n ~ U[8, 32]:
    ``min_items=8, max_items=32``); by default n = M for every example (evaluation at a
    fixed length; lengths up to 2048 and beyond are fine).

    Args:
      key: a JAX random key.
      batch_size: B.
      max_items: M, padded haystack length (and the largest n).
      min_items: smallest n (default: ``max_items``).
      num_subkeys: S, values per sub-key (>= 2).
      num_values: V, value classes (>= 2); class 0 is the filler.
      near_miss_prob: probability that a distractor shares one sub-key with the needle.
      filler_prob: probability that a distractor's value is the filler class 0.

    Returns:
      dict with ``item_keys (B, M, 2) int32`` (sub-keys), ``item_key_ids (B, M) int32``
      (a * S + b), ``item_values (B, M) int32``, ``valid (B, M) bool``, ``lengths (B,) int32``
      (n), ``query (B, 2) int32``, ``query_id (B,) int32``, ``target (B,) int32`` (the
      needle's value), ``needle_index (B,) int32`` (uniform over the n real slots) and
      ``near_miss (B, M) bool`` (valid distractors sharing a sub-key with the needle).
    """
    check_key(key)
    batch_size = check_int("batch_size", batch_size, low=1)
    max_items = check_int("max_items", max_items, low=1)
    min_items = max_items if min_items is None else check_int("min_items", min_items, low=1, high=max_items)
    num_subkeys = check_int("num_subkeys", num_subkeys, low=2)
    num_values = check_int("num_values", num_values, low=2)
    near_miss_prob = check_prob("near_miss_prob", near_miss_prob)
    filler_prob = check_prob("filler_prob", filler_prob)

    B, M, S, V = batch_size, max_items, num_subkeys, num_values
    ks = jax.random.split(key, 10)
    query = jax.random.randint(ks[0], (B, 2), 0, S, dtype=jnp.int32)  # the needle's key
    lengths = jax.random.randint(ks[1], (B,), min_items, max_items + 1, dtype=jnp.int32)
    needle_index = jax.random.randint(ks[2], (B,), 0, lengths, dtype=jnp.int32)  # maxval per example
    needle_value = jax.random.randint(ks[3], (B,), 0, V, dtype=jnp.int32)

    # Distractor keys: sub-keys that differ from the needle's, except the shared one of a near miss.
    other_a = _randint_excluding(ks[4], (B, M), S, query[:, :1])  # (B, M), != query a
    other_b = _randint_excluding(ks[5], (B, M), S, query[:, 1:])  # (B, M), != query b
    near = jax.random.bernoulli(ks[6], near_miss_prob, (B, M))
    share_a = jax.random.bernoulli(ks[7], 0.5, (B, M))  # which sub-key a near miss shares
    a = jnp.where(near & share_a, query[:, :1], other_a)
    b = jnp.where(near & ~share_a, query[:, 1:], other_b)
    filler = jax.random.bernoulli(ks[8], filler_prob, (B, M))
    distractor_value = jnp.where(filler, 0, jax.random.randint(ks[9], (B, M), 1, V, dtype=jnp.int32))

    slot = jnp.arange(M)[None, :]  # (1, M)
    is_needle = slot == needle_index[:, None]  # (B, M)
    valid = slot < lengths[:, None]  # (B, M)
    a = jnp.where(is_needle, query[:, :1], a)
    b = jnp.where(is_needle, query[:, 1:], b)
    values = jnp.where(is_needle, needle_value[:, None], distractor_value)
    item_keys = jnp.where(valid[..., None], jnp.stack([a, b], axis=-1), 0).astype(jnp.int32)  # (B, M, 2)
    item_values = jnp.where(valid, values, 0).astype(jnp.int32)
    return {
        "item_keys": item_keys,
        "item_key_ids": item_keys[..., 0] * S + item_keys[..., 1],
        "item_values": item_values,
        "valid": valid,
        "lengths": lengths,
        "query": query,
        "query_id": query[:, 0] * S + query[:, 1],
        "target": needle_value,
        "needle_index": needle_index,
        "near_miss": near & valid & ~is_needle,
    }


# ----------------------------------------------------------------------------------------------
# 4. Bigram-Backcopy (Guo et al. 2024)
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, kw_only=True, eq=False)
class BigramBackcopyTask:
    """A fixed instance of the Bigram-Backcopy process: its bigram matrix and trigger tokens.

    Made by ``make_bigram_backcopy_task``. ``eq=False`` keeps it hashable by identity, so it
    can be closed over or passed as a static argument under ``jax.jit``.
    """

    transition: np.ndarray  # (V, V) float32, row i = P(next | current = i); rows sum to 1
    triggers: tuple[int, ...]  # trigger token ids, all in [0, V)
    seed: int  # the numpy seed the matrix was drawn from

    @property
    def vocab_size(self) -> int:
        """V, the number of ordinary tokens (BOS excluded)."""
        return int(self.transition.shape[0])

    @property
    def bos(self) -> int:
        """The BOS token id, V."""
        return self.vocab_size

    @property
    def num_tokens(self) -> int:
        """V + 1: the embedding table size a model needs."""
        return self.vocab_size + 1

    def sample(self, key, *, batch_size: int, seq_len: int = 32) -> dict[str, jax.Array]:
        """Same as ``sample_bigram_backcopy(key, self, ...)``."""
        return sample_bigram_backcopy(key, self, batch_size=batch_size, seq_len=seq_len)


def make_bigram_backcopy_task(seed: int = 0, *, vocab_size: int = 32, triggers: tuple[int, ...] = (1, 2, 3),
                              concentration: float = 0.3, trigger_weight: float = 3.0) -> BigramBackcopyTask:
    """Draw a Bigram-Backcopy task: bigram rows ~ Dirichlet(concentration), up-weighted triggers.

    Guo et al. 2024, "Active-Dormant Attention Heads" (arXiv 2410.13835): sequences follow a
    bigram Markov chain, except that after a trigger token the next token copies the token
    *before* the trigger. Attention heads that implement the copy are active on triggers and
    dump their attention on BOS everywhere else -- an attention sink (Gu et al. 2024).
    The trigger columns are multiplied by ``trigger_weight`` and rows renormalised, so that
    triggers are common: with the defaults, 12-23 % of the predicted tokens are back-copies
    (seeds 0-4; 17 % at seed 0, whose Bayes-optimal loss at T = 32 is 2.03 nats).

    Args:
      seed: numpy seed for the matrix (the task is fixed; the sequences come from a JAX key).
      vocab_size: V ordinary tokens; BOS is the extra id V.
      triggers: distinct trigger ids in [0, V).
      concentration: Dirichlet concentration of each row (small = peaky bigrams).
      trigger_weight: factor on the probability of moving to a trigger, before renormalising.

    Returns:
      a ``BigramBackcopyTask``.
    """
    seed = check_int("seed", seed, low=0)
    vocab_size = check_int("vocab_size", vocab_size, low=2)
    triggers = tuple(int(t) for t in triggers)
    if not triggers or len(set(triggers)) != len(triggers) or not all(0 <= t < vocab_size for t in triggers):
        raise ValueError(f"triggers must be distinct ids in [0, {vocab_size}), got {triggers}")
    if len(triggers) >= vocab_size:
        raise ValueError(f"triggers must leave ordinary tokens to copy: {len(triggers)} triggers, vocab_size {vocab_size}")
    if not concentration > 0 or not trigger_weight > 0:
        raise ValueError(f"concentration and trigger_weight must be > 0, got {concentration}, {trigger_weight}")

    rng = np.random.default_rng(seed)
    transition = rng.dirichlet(np.full(vocab_size, float(concentration)), size=vocab_size)  # (V, V)
    transition[:, list(triggers)] *= trigger_weight
    transition /= transition.sum(axis=1, keepdims=True)
    return BigramBackcopyTask(transition=transition.astype(np.float32), triggers=triggers, seed=seed)


def _active_triggers(tokens: jax.Array, is_trigger: jax.Array, bos: int) -> jax.Array:
    """(B, T) bool: token t is a trigger whose predecessor is an ordinary token (so t+1 copies it)."""
    prev = jnp.concatenate([jnp.full_like(tokens[:, :1], bos), tokens[:, :-1]], axis=1)  # (B, T)
    prev_ordinary = (prev != bos) & ~is_trigger[jnp.minimum(prev, bos - 1)]
    return is_trigger[jnp.minimum(tokens, bos - 1)] & (tokens != bos) & prev_ordinary


@compiled
def sample_bigram_backcopy(key, task: BigramBackcopyTask, *, batch_size: int, seq_len: int = 32
                           ) -> dict[str, jax.Array]:
    """Sample BOS-prefixed Bigram-Backcopy sequences (Guo et al. 2024).

    The process: ``x_0 = BOS``; ``x_1`` uniform over [0, V); then for t >= 1, if ``x_t`` is
    a trigger and ``x_{t-1}`` is an ordinary token (not BOS, not a trigger), ``x_{t+1} =
    x_{t-1}`` (back-copy); otherwise ``x_{t+1} ~ transition[x_t]``. The "ordinary
    predecessor" rule keeps a copied trigger from starting an endless trigger chain.

    Args:
      key: a JAX random key.
      task: from ``make_bigram_backcopy_task`` (close over it under jit).
      batch_size: B.
      seq_len: T, including the BOS at position 0 (the attention-sinks lesson uses 32).

    Returns:
      dict with ``tokens (B, T) int32``, ``targets (B, T)``, ``loss_mask (B, T) bool``
      (every column but the last), ``trigger (B, T) bool`` (True where ``tokens[:, t]`` is an
      active trigger, i.e. the next token ``targets[:, t]`` is the back-copy
      ``tokens[:, t - 1]``; at t = T - 1 the copy would fall past the end) and
      ``true_logprob (B, T) float32`` (log-probability of ``targets[:, t]`` under the true
      process, 0 where masked: its masked mean is the Bayes-optimal loss).
    """
    check_key(key)
    if not isinstance(task, BigramBackcopyTask):
        raise TypeError(f"task must be a BigramBackcopyTask from make_bigram_backcopy_task, got {type(task).__name__}")
    batch_size = check_int("batch_size", batch_size, low=1)
    seq_len = check_int("seq_len", seq_len, low=2)
    V, bos = task.vocab_size, task.bos

    log_p = jnp.log(jnp.asarray(task.transition))  # (V, V); zeros -> -inf, fine for categorical
    is_trigger = jnp.zeros(V, bool).at[jnp.asarray(task.triggers)].set(True)  # (V,)
    k_first, k_steps = jax.random.split(key)
    first = jax.random.randint(k_first, (batch_size,), 0, V, dtype=jnp.int32)

    def step(carry, step_key):
        prev, cur = carry  # (B,), (B,)
        copy = is_trigger[cur] & (prev != bos) & ~is_trigger[jnp.minimum(prev, V - 1)]
        bigram = jax.random.categorical(step_key, log_p[cur], axis=-1).astype(jnp.int32)  # (B,)
        nxt = jnp.where(copy, prev, bigram)
        return (cur, nxt), nxt

    carry0 = (jnp.full((batch_size,), bos, jnp.int32), first)
    _, rest = jax.lax.scan(step, carry0, jax.random.split(k_steps, seq_len - 2))  # rest: (T-2, B)
    tokens = jnp.concatenate(
        [jnp.full((batch_size, 1), bos, jnp.int32), first[:, None], rest.T], axis=1
    )[:, :seq_len]  # (B, T)

    trigger = _active_triggers(tokens, is_trigger, bos)
    targets = _next_token_targets(tokens)
    loss_mask = jnp.broadcast_to(jnp.arange(seq_len) < seq_len - 1, (batch_size, seq_len))
    bigram_lp = log_p[jnp.minimum(tokens, V - 1), jnp.minimum(targets, V - 1)]  # (B, T)
    true_lp = jnp.where(trigger, 0.0, bigram_lp)
    true_lp = true_lp.at[:, 0].set(-jnp.log(float(V)))  # x_1 is uniform after BOS
    true_lp = jnp.where(loss_mask, true_lp, 0.0)
    return {"tokens": tokens, "targets": targets, "loss_mask": loss_mask, "trigger": trigger,
            "true_logprob": true_lp.astype(jnp.float32)}


# ----------------------------------------------------------------------------------------------
# 5. Counting with a CLS token
# ----------------------------------------------------------------------------------------------

#: Token ids of ``counting_task``; ids from ``COUNTING_FIRST_FILLER`` on are fillers.
COUNTING_CLS, COUNTING_A, COUNTING_B, COUNTING_MASK = 0, 1, 2, 3
COUNTING_FIRST_FILLER = 4


@compiled
def counting_task(key, *, batch_size: int, seq_len: int = 24, max_count: int = 6, num_fillers: int = 12,
                  mask_prob: float = 0.0) -> dict[str, jax.Array]:
    """Classify ``CLS x_1 ... x_{T-1}`` by whether it holds more As than Bs.

    Each sequence has 1..max_count As and 1..max_count Bs, the two counts unequal, at random
    positions; the other positions are fillers. With ``mask_prob`` > 0 every non-CLS position
    is independently replaced by MASK (the heads lesson uses 10 %, so that deletion tests
    with MASK stay in distribution); the label is recounted *after* masking (a tie is
    label 0). The A/B positions are the ground-truth relevance for attribution lessons
    (Michel et al. 2019; Abnar & Zuidema 2020). Non-causal: read the prediction at CLS.

    Token ids: CLS 0, A 1, B 2, MASK 3, fillers 4 .. 3 + num_fillers (vocab 4 + num_fillers).

    Args:
      key: a JAX random key.
      batch_size: B.
      seq_len: T, including CLS at position 0 (default 24: 23 content positions).
      max_count: largest count of As (and of Bs); 2 * max_count <= T - 1.
      num_fillers: number of filler token ids.
      mask_prob: probability that a content position is replaced by MASK.

    Returns:
      dict with ``tokens (B, T) int32``, ``label (B,) int32`` (1 iff #A > #B among the
      tokens), ``count_a (B,) int32``, ``count_b (B,) int32``, ``is_a (B, T) bool``,
      ``is_b (B, T) bool`` and ``relevant (B, T) bool`` (= is_a | is_b).
    """
    check_key(key)
    batch_size = check_int("batch_size", batch_size, low=1)
    seq_len = check_int("seq_len", seq_len, low=3)
    max_count = check_int("max_count", max_count, low=2)
    if 2 * max_count > seq_len - 1:
        raise ValueError(f"max_count={max_count} needs 2 * max_count <= seq_len - 1 = {seq_len - 1} content positions")
    num_fillers = check_int("num_fillers", num_fillers, low=1)
    mask_prob = check_prob("mask_prob", mask_prob)

    B, P = batch_size, seq_len - 1  # P content positions
    ks = jax.random.split(key, 5)
    n_a = jax.random.randint(ks[0], (B,), 1, max_count + 1, dtype=jnp.int32)
    r = jax.random.randint(ks[1], (B,), 0, max_count - 1, dtype=jnp.int32)
    n_b = 1 + r + (r + 1 >= n_a)  # uniform over [1, max_count] minus {n_a}
    # rank[b, p] = where position p falls in a random permutation: ranks < n_a are As, then Bs.
    rank = jnp.argsort(jnp.argsort(jax.random.uniform(ks[2], (B, P)), axis=1), axis=1)  # (B, P)
    fillers = COUNTING_FIRST_FILLER + jax.random.randint(ks[3], (B, P), 0, num_fillers, dtype=jnp.int32)
    content = jnp.where(rank < n_a[:, None], COUNTING_A,
                        jnp.where(rank < (n_a + n_b)[:, None], COUNTING_B, fillers))
    masked = jax.random.bernoulli(ks[4], mask_prob, (B, P))
    content = jnp.where(masked, COUNTING_MASK, content)
    tokens = jnp.concatenate([jnp.full((B, 1), COUNTING_CLS, jnp.int32), content], axis=1).astype(jnp.int32)
    is_a, is_b = tokens == COUNTING_A, tokens == COUNTING_B
    count_a = is_a.sum(axis=1, dtype=jnp.int32)
    count_b = is_b.sum(axis=1, dtype=jnp.int32)
    return {
        "tokens": tokens,
        "label": (count_a > count_b).astype(jnp.int32),
        "count_a": count_a,
        "count_b": count_b,
        "is_a": is_a,
        "is_b": is_b,
        "relevant": is_a | is_b,
    }
