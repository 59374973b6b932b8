"""The vision-language backbone: transformers' native InternVL, language model cut to N layers.

Images go through InternViT, pixel unshuffle and the MLP projector; their tokens replace the
`<IMG_CONTEXT>` placeholders of the prompt; the truncated Qwen2 runs over the whole sequence
and its last hidden state (after the final norm) is the prefix the action head attends to.
Masked views are replaced by a fill image (grey or black, config.missing_view_fill) whose token
positions are masked out of the language model's attention (and out of the action head's, unless
config.head_attends_padding). With config.zero_masked_attention the language model computes what
flash-attention-2 computes for the reference: masked positions get a zero attention output.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import AttentionInterface, InternVLConfig, InternVLModel
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

from .config import IMG_CONTEXT_ID, PAD_ID, Evo1Config
from .images import IMAGENET_MEAN, IMAGENET_STD

UNPADDED_ATTENTION = "evo1_unpadded_sdpa"


def unpadded_sdpa_attention(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """SDPA, then a zero output at every masked query position: what flash-attention-2 returns
    after dropping the masked positions (transformers' unpad / attend / pad). Valid positions are
    unchanged. A query position is masked where it may not attend to itself: the diagonal of the
    (B, 1, L, L) boolean mask that transformers builds from the padding and the causal order."""
    output, weights = sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    if attention_mask is None or attention_mask.shape[-1] != attention_mask.shape[-2]:
        return output, weights  # no padding (or a cached decode step): nothing is masked
    if attention_mask.dtype == torch.bool:
        query_valid = attention_mask.diagonal(dim1=-2, dim2=-1)[:, 0]
    else:  # an additive float mask: 0 where attended
        query_valid = attention_mask.diagonal(dim1=-2, dim2=-1)[:, 0] == 0
    # output is (B, L, heads, head_dim)
    return output * query_valid[:, :, None, None].to(output.dtype), weights


AttentionInterface.register(UNPADDED_ATTENTION, unpadded_sdpa_attention)
ALL_MASK_ATTENTION_FUNCTIONS.register(UNPADDED_ATTENTION, sdpa_mask)


def missing_view_pixels(fill: str) -> torch.Tensor:
    """(3, 1, 1) normalised pixel value of a missing view: grey (the ImageNet mean, 0 after
    normalisation) or black (the reference's and LeRobot's zero image, about -2.12, -2.04, -1.80)."""
    if fill == "black":
        return torch.from_numpy(-IMAGENET_MEAN / IMAGENET_STD).view(3, 1, 1)
    return torch.zeros(3, 1, 1)


def internvl_config(config: Evo1Config) -> InternVLConfig:
    v, t = config.vision, config.text
    return InternVLConfig(
        vision_config={
            "hidden_size": v.hidden_size,
            "num_hidden_layers": v.num_layers,
            "num_attention_heads": v.num_heads,
            "intermediate_size": v.intermediate_size,
            "patch_size": [v.patch_size, v.patch_size],
            "image_size": [v.image_size, v.image_size],
            "hidden_act": "gelu",
            "norm_type": "layer_norm",
            "layer_norm_eps": 1e-6,
            "use_mean_pooling": True,
            "use_absolute_position_embeddings": True,
            "attention_bias": True,
            "use_qk_norm": False,
        },
        text_config={
            "model_type": "qwen2",
            "hidden_size": t.hidden_size,
            "num_hidden_layers": t.num_layers,
            "num_attention_heads": t.num_heads,
            "num_key_value_heads": t.num_kv_heads,
            "intermediate_size": t.intermediate_size,
            "vocab_size": t.vocab_size,
            "max_position_embeddings": t.max_position_embeddings,
            "rope_theta": t.rope_theta,
            "rms_norm_eps": 1e-6,
            "hidden_act": "silu",
            "tie_word_embeddings": False,
            "use_cache": False,
        },
        image_token_id=IMG_CONTEXT_ID,
        downsample_ratio=config.downsample_ratio,
        projector_hidden_act="gelu",
        vision_feature_layer=-1,
        vision_feature_select_strategy="default",
        pad_token_id=PAD_ID,
    )


class Backbone(nn.Module):
    """InternVL3 (vision tower, projector, truncated Qwen2) producing the action head's prefix."""

    def __init__(self, config: Evo1Config):
        super().__init__()
        self.config = config
        hf_config = internvl_config(config)
        hf_config._attn_implementation = "sdpa"
        hf_config.vision_config._attn_implementation = "sdpa"
        hf_config.text_config._attn_implementation = UNPADDED_ATTENTION if config.zero_masked_attention else "sdpa"
        self.model = InternVLModel(hf_config)
        self.register_buffer("missing_view", missing_view_pixels(config.missing_view_fill), persistent=False)
        if config.text.embedding_init_std > 0:
            nn.init.normal_(self.model.get_input_embeddings().weight, std=config.text.embedding_init_std)

    def forward(
        self,
        pixel_values: torch.Tensor,
        view_mask: torch.Tensor,
        input_ids: torch.Tensor,
        text_mask: torch.Tensor,
        image_positions: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """pixel_values (B, V, 3, S, S) normalised; view_mask (B, V) bool; input_ids (B, L) with
        V blocks of tokens_per_view `<IMG_CONTEXT>` ids; text_mask (B, L) bool, False at padding;
        image_positions (B, V * tokens_per_view): where those ids are (image_positions() computes
        it, and checks the count; a captured caller computes it on the host beforehand, so that
        nothing here reads a tensor back).

        Returns the hidden states (B, L, width) and the attention mask (B, L) bool that the
        language model used (padding and masked views False).
        """
        if image_positions is None:
            image_positions = image_token_positions(input_ids, view_mask.shape[1], self.config.tokens_per_view)
        dtype = self.model.multi_modal_projector.linear_1.weight.dtype
        present = view_mask[:, :, None, None, None].bool()
        pixels = torch.where(present, pixel_values.to(dtype), self.missing_view.to(dtype))
        features = self.model.get_image_features(pixel_values=pixels.flatten(0, 1), return_dict=True).pooler_output
        batch, views = view_mask.shape
        per_view, width = features.shape[1], features.shape[2]
        embeds = self.model.get_input_embeddings()(input_ids)
        where = image_positions[:, :, None].expand(-1, -1, width)
        embeds = embeds.scatter(1, where, features.reshape(batch, views * per_view, width).to(embeds.dtype))

        # Placeholders are laid out view by view: the k-th image token of a row belongs to view
        # k // per_view, and its position is attended only when that view is present.
        token_present = view_mask.bool().repeat_interleave(per_view, dim=1)
        attention = text_mask.bool().scatter(
            1, image_positions, text_mask.bool().gather(1, image_positions) & token_present
        )
        hidden = self.model.language_model(
            inputs_embeds=embeds, attention_mask=causal_mask(attention), use_cache=False
        ).last_hidden_state
        return hidden, attention


def image_token_positions(input_ids: torch.Tensor, views: int, per_view: int) -> torch.Tensor:
    """(B, views * per_view) indices of the `<IMG_CONTEXT>` placeholders of each prompt row, in order.
    Raises ValueError when a row has another count (the prompt does not match the views)."""
    is_image = input_ids == IMG_CONTEXT_ID
    counts = is_image.sum(dim=1).tolist()
    if any(n != views * per_view for n in counts):
        raise ValueError(
            f"prompt has {sum(counts)} image placeholders, expected {len(counts) * views * per_view} "
            f"({views} views x {per_view} tokens x batch {len(counts)})"
        )
    # a stable sort puts every placeholder (key 0) first, in prompt order
    return torch.sort((~is_image).to(torch.uint8), dim=1, stable=True).indices[:, : views * per_view]


def causal_mask(attention: torch.Tensor) -> torch.Tensor:
    """(B, 1, L, L) bool: query i attends key j when j <= i and j is attended. It is what transformers
    builds from a 2D mask (sdpa_mask), built here so that a static shape gives a static mask: no
    data-dependent shortcut (transformers drops the mask when nothing is padded)."""
    length = attention.shape[1]
    lower = torch.ones(length, length, dtype=torch.bool, device=attention.device).tril()
    return lower[None, None] & attention[:, None, None, :]
