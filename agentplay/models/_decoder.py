"""A lean decode path for Llama-family models: the same arithmetic as transformers' modules, with
fewer, larger ops and a per-row KV cache without padding.

Why this and not the alternatives (issue #21; measured on the 2-core dev box, SmolLM2-135M fp32,
CPU milliseconds per decode step of one thread, so that the figures hold on a shared machine:
`python bench/serving.py --decode-profile`):
- transformers' `LlamaForCausalLM.forward` with a `DynamicCache`: 88 ms per 1-row step with a
  150-token cache, 209 ms per 8-row step; this path: 72 and 174 (1.2-1.3x), bit-identical to it
  at 1 row before the batch-invariance padding below. It runs each layer as 4 matmuls from weights fused once (q|k|v, o, gate|up, down),
  writes keys and values into a preallocated per-row buffer and calls one attention kernel per row.
- Where the step goes now: matmuls are ~75% of its CPU time, attention ~4%, everything else
  (the Python and small ops that `torch.compile` could fuse) ~20%. The matmuls stream the fp32
  weights (540 MB per step at one row): the step is memory-bound, not dispatch-bound. So
  `torch.compile` could win at most the ~20%, recompiles for every (rows, cache length) shape a
  continuous batch passes through unless the cache is padded to a static length (then every row
  attends over the padding and its numerics depend on the batch), and costs minutes of compiling
  per shape bucket on this CPU. Not taken.
- bf16 weights (AMX on this CPU) are an opt-in (`low_dtype`, `ModelConfig.decode_dtype`), never
  the default: they move logprobs off the fp32 trainer's, which only an importance-sampling
  correction (the trainer's `tis_cap` / `mis_bound`) makes up for. Each product multiplies bf16
  copies of the fused weights (rebuilt with them) with fp32 accumulation; the residual stream,
  norms, rotary, attention and KV cache stay fp32, and since a bf16 product also rounds its output
  (a logit of 15 by up to 0.03) the 64 likeliest tokens' logits are recomputed in fp32. Measured
  (1 thread, 150-token caches, CPU ms per step fp32 -> bf16): 1 row 61 -> 56, 2 rows 61 -> 64,
  4 rows 106 -> 68, 8 rows 140 -> 82, 16 rows 241 -> 110; teacher-forced on fp32's greedy tokens,
  mean |dlogprob| 0.010 (max 0.07) and 99% greedy agreement (all-bf16 logits: 0.016 / 0.10 / 98%).
  On sampled (T=1) tokens 0.015 (max 0.14), whatever the number of fp32-recomputed logits (64 to
  1024, or an fp32 head): the rest is the bf16 weights' own rounding.
  bf16 is used at every batch size, although at 1-2 rows it is no faster than fp32 (oneDNN's bf16
  GEMV streams half the bytes at half the rate): switching to fp32 below some row count would make a
  row's numerics depend on how many rows share its step, and a sample's record ambiguous.
- int8 weights (`torch._weight_int8pack_mm`, per-channel scales, bf16 activations), measured on
  the 120 layer products alone, ms per step fp32 / bf16 / int8: 1 row 39 / 37 / 20, 4 rows
  66 / 39 / 26, 8 rows 85 / 40 / 43, 16 rows 87 / 42 / 66. It would halve a lone row's step, but
  loses to bf16 from 8 rows (where issue #21's n > 1 target is), rounds weights more coarsely than
  bf16, and choosing int8 or bf16 by batch size would make a row's numerics depend on its batch.
  Not taken.
- Rows keep their own unpadded cache (no left padding): a row's attention reads exactly its own
  keys, so its numerics do not depend on how long the other rows in the batch are.
- Batch invariance: MKL's fp32 sgemm computes a row of `x @ W.T` with the same bits whatever the
  other rows are for 2 <= rows <= 15 with one thread (measured for every weight shape here), but
  takes a GEMV kernel at 1 row and another blocking from 16 rows. `_linear` therefore never
  multiplies 1 row (it pads to 2) nor more than 15 (it splits into near-equal chunks), and with
  every other op per row, a row's tokens and logprobs do not depend on what shares its batch,
  down to the last bit, with one intra-op thread (with two, MKL splits small-N products by rows
  and that no longer holds from 4 rows). The padding costs 10-15% of a one-row step; it is what
  lets a killed-and-resumed run (tests/test_trainer_kill.py) re-sample exactly what it had. So it
  is on (`batch_invariant`) when the decoding thread has one intra-op thread, where it buys
  exactness, and off with more, where nothing can buy it. oneDNN's bf16 products are row-invariant
  with one thread from 2 to 32 rows (measured), so the bf16 path splits only above 32 rows and, on
  a CPU with AVX512-BF16, pads one row to two (there a one-row product took another kernel and a
  row's logprobs changed as soon as a second row joined its batch; measured on this 2-core box),
  so it is batch-invariant too (it is not equal to fp32, but it reproduces itself).

`rebuild()` re-reads the model's weights (the fused copies are not views); the engine calls it
after every weight change (`run_exclusive`), with PEFT LoRA layers folded in as W + scale * B @ A.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

__all__ = ["LeanDecoder", "RowCache", "supports_lean_decoder"]


def supports_lean_decoder(model: Any) -> bool:
    """Llama-architecture decoders with plain RoPE and full attention (SmolLM2, Llama, Qwen2-like
    without biases): the arithmetic this module reproduces."""
    cfg = getattr(model, "config", None)
    if cfg is None or getattr(cfg, "model_type", None) != "llama":
        return False
    rope = getattr(cfg, "rope_parameters", None) or getattr(cfg, "rope_scaling", None) or {}
    kinds = set(getattr(cfg, "layer_types", None) or ["full_attention"])
    return (
        rope.get("rope_type", "default") == "default"
        and kinds == {"full_attention"}
        and not getattr(cfg, "attention_bias", False)
        and not getattr(cfg, "mlp_bias", False)
        and getattr(cfg, "hidden_act", "silu") == "silu"
        and getattr(cfg, "pretraining_tp", 1) == 1
    )


class RowCache:
    """One sequence's keys and values for every layer, `length` positions filled.

    `kv` is `[layers, 2, kv_heads, capacity, head_dim]`; capacity doubles when full, so a row
    costs memory for its own length only and is never padded to another row's."""

    __slots__ = ("kv", "length")

    def __init__(self, kv: torch.Tensor, length: int) -> None:
        self.kv = kv
        self.length = length

    def reserve(self, extra: int) -> None:
        need = self.length + extra
        if need <= self.kv.shape[3]:
            return
        capacity = max(need, 2 * self.kv.shape[3])
        grown = self.kv.new_empty((*self.kv.shape[:3], capacity, self.kv.shape[4]))
        grown[:, :, :, : self.length] = self.kv[:, :, :, : self.length]
        self.kv = grown

    def clone(self, extra: int = 0) -> RowCache:
        kv = self.kv.new_empty((*self.kv.shape[:3], self.length + max(extra, 16), self.kv.shape[4]))
        kv[:, :, :, : self.length] = self.kv[:, :, :, : self.length]
        return RowCache(kv, self.length)


@dataclass
class _Layer:
    ln1: torch.Tensor
    wqkv: torch.Tensor
    wo: torch.Tensor
    ln2: torch.Tensor
    wgu: torch.Tensor
    wd: torch.Tensor
    low: _Layer | None = None
    """The same four products' weights in `LeanDecoder.low_dtype` (None: fp32 only)."""


class LeanDecoder:
    """Prefill and decode steps over `RowCache`s, numerically the ops of transformers' Llama."""

    def __init__(self, model: Any, *, low_dtype: torch.dtype | None = None) -> None:
        cfg = model.config
        self.low_dtype = low_dtype
        """None: every product in fp32 (exact). bfloat16: every product multiplies bf16 copies of
        the weights (see the module docstring); the residual stream, norms, rotary, attention,
        the KV cache and the likeliest tokens' logits stay fp32."""
        self.model = model
        self.layers_n = cfg.num_hidden_layers
        self.heads = cfg.num_attention_heads
        self.kv_heads = cfg.num_key_value_heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        self.eps = cfg.rms_norm_eps
        self.scaling = self.head_dim**-0.5
        rotary = model.model.rotary_emb
        self._inv_freq = rotary.inv_freq.float()
        self._rope_scale = float(getattr(rotary, "attention_scaling", 1.0))
        self._layers: list[_Layer] = []
        self.batch_invariant = True
        """Keep decode products in MKL's row-invariant shapes (see the module docstring); the engine
        sets it from its thread's intra-op thread count."""
        self.rebuild()

    # -- weights ------------------------------------------------------------------

    @torch.no_grad()
    def rebuild(self) -> None:
        """Read the served weights again (after an in-place copy or a LoRA load/unload)."""
        inner = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
        body = inner.model
        self._embed = _weight(body.embed_tokens)
        self._norm = body.norm.weight
        self._lm_head = _weight(inner.lm_head)
        layers = []
        for block in body.layers:
            attn, mlp = block.self_attn, block.mlp
            layers.append(_Layer(
                ln1=block.input_layernorm.weight,
                wqkv=torch.cat([_weight(attn.q_proj), _weight(attn.k_proj), _weight(attn.v_proj)]),
                wo=_weight(attn.o_proj),
                ln2=block.post_attention_layernorm.weight,
                wgu=torch.cat([_weight(mlp.gate_proj), _weight(mlp.up_proj)]),
                wd=_weight(mlp.down_proj),
            ))
        if self.low_dtype is not None:
            low = self.low_dtype
            for layer in layers:
                layer.low = _Layer(ln1=layer.ln1, wqkv=layer.wqkv.to(low), wo=layer.wo.to(low), ln2=layer.ln2,
                                   wgu=layer.wgu.to(low), wd=layer.wd.to(low))
            self._lm_head_low = self._lm_head.to(low)
        self._layers = layers

    # -- caches -------------------------------------------------------------------

    def new_cache(self, capacity: int) -> RowCache:
        kv = self._embed.new_empty((self.layers_n, 2, self.kv_heads, max(capacity, 16), self.head_dim))
        return RowCache(kv, 0)

    # -- forward ------------------------------------------------------------------

    def prefill(self, ids: list[int], extra: int) -> tuple[torch.Tensor, RowCache]:
        """Encode one prompt; returns the logits after its last token and its cache (room for
        `extra` more tokens). Each prompt alone: its numerics never depend on other prompts."""
        cache = self.new_cache(len(ids) + extra)
        tokens = torch.tensor(ids, dtype=torch.long, device=self._embed.device)
        positions = torch.arange(len(ids), device=tokens.device)
        h = F.embedding(tokens, self._embed)
        cos, sin = self._rope(positions)
        t = len(ids)
        low = self.low_dtype is not None
        linear = _low_linear if low else F.linear
        for i, full in enumerate(self._layers):
            layer = full.low if low and full.low is not None else full
            # a whole prompt is one big product (its shape, and so its rounding, is the prompt's own)
            q, k, v = self._qkv(h, layer, cos, sin, linear)  # [t, heads, d], [t, kv, d]
            kt, vt = k.transpose(0, 1), v.transpose(0, 1)
            cache.kv[i, 0, :, :t] = kt
            cache.kv[i, 1, :, :t] = vt
            out = F.scaled_dot_product_attention(q.transpose(0, 1)[None], kt[None], vt[None], is_causal=True,
                                                 scale=self.scaling, enable_gqa=True)
            h = self._rest(h, out[0].transpose(0, 1).reshape(t, -1), layer, linear)
        cache.length = t
        return self._logits(h[-1:], None, low), cache

    def decode(self, tokens: torch.Tensor, caches: list[RowCache]) -> torch.Tensor:
        """One step of every row: `tokens[i]` is fed at position `caches[i].length`; returns
        `[rows, vocab]` logits and advances every cache by one."""
        rows = len(caches)
        for c in caches:
            c.reserve(1)
        at = [c.length for c in caches]
        positions = torch.tensor(at, dtype=torch.long, device=tokens.device)
        h = F.embedding(tokens, self._embed)
        cos, sin = self._rope(positions)
        low = self.low_dtype is not None
        linear: Any
        if low:
            linear = _low_linear_rows if self.batch_invariant else _low_linear
        else:
            linear = _linear if self.batch_invariant else F.linear
        for i, full in enumerate(self._layers):
            layer = full.low if low and full.low is not None else full
            q, k, v = self._qkv(h, layer, cos, sin, linear)  # [rows, heads, d], [rows, kv, d]
            outs = []
            kv = torch.stack([k, v], 1)  # [rows, 2, kv, d]: one copy per row into its cache
            for r, c in enumerate(caches):
                n = at[r]
                c.kv[i, :, :, n] = kv[r]
                outs.append(F.scaled_dot_product_attention(
                    q[r][None, :, None], c.kv[i, 0, :, : n + 1][None], c.kv[i, 1, :, : n + 1][None],
                    scale=self.scaling, enable_gqa=True))
            attn = torch.cat(outs).reshape(rows, -1)
            h = self._rest(h, attn, layer, linear)
        for c in caches:
            c.length += 1
        return self._logits(h, linear, low)

    def _qkv(self, h: torch.Tensor, layer: _Layer, cos: torch.Tensor, sin: torch.Tensor,
             linear: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        d = self.head_dim
        qkv = linear(_rms(h, layer.ln1, self.eps), layer.wqkv)
        q, k, v = qkv.split([self.heads * d, self.kv_heads * d, self.kv_heads * d], dim=-1)
        q = q.view(-1, self.heads, d)
        k = k.view(-1, self.kv_heads, d)
        v = v.view(-1, self.kv_heads, d)
        return q * cos + _rotate_half(q) * sin, k * cos + _rotate_half(k) * sin, v

    def _rest(self, h: torch.Tensor, attn: torch.Tensor, layer: _Layer, linear: Any) -> torch.Tensor:
        h = h + linear(attn, layer.wo)
        gate, up = linear(_rms(h, layer.ln2, self.eps), layer.wgu).chunk(2, dim=-1)
        return h + linear(F.silu(gate) * up, layer.wd)

    def _rope(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        freqs = positions[:, None].float() * self._inv_freq.to(positions.device)
        emb = torch.cat((freqs, freqs), dim=-1)
        dtype = self._embed.dtype
        cos = (emb.cos() * self._rope_scale).to(dtype)[:, None]
        sin = (emb.sin() * self._rope_scale).to(dtype)[:, None]
        return cos, sin

    def _logits(self, h: torch.Tensor, linear: Any = None, low: bool = False) -> torch.Tensor:
        x = _rms(h, self._norm, self.eps)
        if not low:
            return (linear or F.linear)(x, self._lm_head)
        # a bf16 product rounds its output too (a logit of 15 by up to 0.03): the likeliest tokens,
        # which carry the softmax's mass and are almost always the ones sampled, get their logits
        # again in fp32 from the fp32 hidden state (greedy tokens' mean error 0.016 -> 0.010, ~2% of the head's cost)
        logits = _low_linear(x, self._lm_head_low)
        top = logits.topk(_EXACT_TOP, dim=-1).indices
        exact = torch.einsum("rd,rkd->rk", x, F.embedding(top, self._lm_head))
        return logits.scatter_(1, top, exact)


_INVARIANT_ROWS = 15
"""Most rows one sgemm call multiplies (see the module docstring)."""


def _row_invariant(product: Any, max_rows: int, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """`product(x, weight)` in the shapes whose rows' bits do not depend on the other rows: never
    one row (padded to two: MKL's fp32 GEMV and, on AVX512-BF16 CPUs, oneDNN's one-row bf16 kernel
    round differently) nor more than `max_rows` (split into near-equal chunks)."""
    rows = x.shape[0]
    if rows == 1:
        return product(x.expand(2, -1).contiguous(), weight)[:1]
    if rows > max_rows:
        chunks = -(-rows // max_rows)
        return torch.cat([product(part, weight) for part in x.tensor_split(chunks)])
    return product(x, weight)


def _linear(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return _row_invariant(F.linear, _INVARIANT_ROWS, x, weight)


_EXACT_TOP = 64
"""Tokens per row whose logits a bf16 step recomputes in fp32."""


def _low_linear(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """`x @ weight.T` with weight's (reduced) precision inputs, fp32 out (oneDNN accumulates in fp32)."""
    return F.linear(x.to(weight.dtype), weight).float()


_INVARIANT_LOW_ROWS = 32
"""Most rows one bf16 product multiplies with row-invariant bits (oneDNN, one thread; measured for
every weight shape here: from 33 rows a row's bits depend on the others)."""


def _low_linear_rows(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return _row_invariant(_low_linear, _INVARIANT_LOW_ROWS, x, weight)


def _rms(h: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    x = h.float()
    x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
    return weight * x.to(h.dtype)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def _weight(module: Any) -> torch.Tensor:
    """The effective weight of a linear (or embedding) layer, with active PEFT LoRA deltas merged."""
    base = getattr(module, "base_layer", None)
    if base is None:
        return module.weight
    weight = base.weight
    active = getattr(module, "active_adapters", None) or []
    if getattr(module, "disable_adapters", False) or getattr(module, "merged", False):
        return weight
    merged = weight
    for name in active:
        if name in getattr(module, "lora_A", {}):
            merged = merged + module.get_delta_weight(name).to(weight.dtype)
    return merged
