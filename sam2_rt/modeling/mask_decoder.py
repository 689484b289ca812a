"""Mask decoder of SAM 2: turns image features and prompt embeddings into mask logits, predicted IoU,
the output token used as object pointer, and the object-presence logit.

Parameter names equal Meta's `sam2==1.1.0` MaskDecoder. The 1x1 convolutions `conv_s0`/`conv_s1` that
project the stride-4/stride-8 backbone features live here (as in Meta's state_dict); the caller applies
them once per image and passes the results as `high_res_features`.
"""
from typing import List, Optional, Tuple, Type

import torch
from torch import Tensor, nn

from sam2_rt.modeling.common import MLP, LayerNorm2d


class MaskDecoder(nn.Module):
    """SAM mask decoder with optional high-res skip features, object-score head and dynamic multimask.

    Arguments (keyword-only, as Meta's):
      transformer_dim: channels of image and prompt embeddings (C).
      transformer: the two-way transformer (C channels).
      num_multimask_outputs: number of alternative masks (K = 3); one more token gives the single mask.
      activation: activation class of the upscaling path.
      iou_head_depth, iou_head_hidden_dim: MLP predicting each mask's IoU.
      use_high_res_features: add projected stride-8 / stride-4 backbone features while upscaling.
      iou_prediction_use_sigmoid: IoU head outputs probabilities instead of logits.
      dynamic_multimask_via_stability: in eval with a single mask requested, fall back to the best of the
        K masks when the single mask's stability score is below the threshold.
      dynamic_multimask_stability_delta, dynamic_multimask_stability_thresh: stability score parameters.
      pred_obj_scores: predict an object-presence logit from its own token.
      pred_obj_scores_mlp: use a 3-layer MLP (instead of a Linear) for the object score.
      use_multimask_token_for_obj_ptr: with multimask output, return the K multimask tokens as pointer tokens.
    """

    def __init__(
        self,
        *,
        transformer_dim: int,
        transformer: nn.Module,
        num_multimask_outputs: int = 3,
        activation: Type[nn.Module] = nn.GELU,
        iou_head_depth: int = 3,
        iou_head_hidden_dim: int = 256,
        use_high_res_features: bool = False,
        iou_prediction_use_sigmoid: bool = False,
        dynamic_multimask_via_stability: bool = False,
        dynamic_multimask_stability_delta: float = 0.05,
        dynamic_multimask_stability_thresh: float = 0.98,
        pred_obj_scores: bool = False,
        pred_obj_scores_mlp: bool = False,
        use_multimask_token_for_obj_ptr: bool = False,
    ) -> None:
        super().__init__()
        self.transformer_dim = transformer_dim
        self.transformer = transformer
        self.num_multimask_outputs = num_multimask_outputs
        self.num_mask_tokens = num_multimask_outputs + 1
        self.iou_token = nn.Embedding(1, transformer_dim)
        self.mask_tokens = nn.Embedding(self.num_mask_tokens, transformer_dim)
        self.pred_obj_scores = pred_obj_scores
        if pred_obj_scores:
            self.obj_score_token = nn.Embedding(1, transformer_dim)
        self.use_multimask_token_for_obj_ptr = use_multimask_token_for_obj_ptr

        self.output_upscaling = nn.Sequential(
            nn.ConvTranspose2d(transformer_dim, transformer_dim // 4, kernel_size=2, stride=2),
            LayerNorm2d(transformer_dim // 4),
            activation(),
            nn.ConvTranspose2d(transformer_dim // 4, transformer_dim // 8, kernel_size=2, stride=2),
            activation(),
        )
        self.use_high_res_features = use_high_res_features
        if use_high_res_features:
            self.conv_s0 = nn.Conv2d(transformer_dim, transformer_dim // 8, kernel_size=1, stride=1)
            self.conv_s1 = nn.Conv2d(transformer_dim, transformer_dim // 4, kernel_size=1, stride=1)

        self.output_hypernetworks_mlps = nn.ModuleList(
            MLP(transformer_dim, transformer_dim, transformer_dim // 8, 3) for _ in range(self.num_mask_tokens)
        )
        self.iou_prediction_head = MLP(
            transformer_dim,
            iou_head_hidden_dim,
            self.num_mask_tokens,
            iou_head_depth,
            sigmoid_output=iou_prediction_use_sigmoid,
        )
        if pred_obj_scores:
            self.pred_obj_score_head = (
                MLP(transformer_dim, transformer_dim, 1, 3) if pred_obj_scores_mlp else nn.Linear(transformer_dim, 1)
            )
        self.dynamic_multimask_via_stability = dynamic_multimask_via_stability
        self.dynamic_multimask_stability_delta = dynamic_multimask_stability_delta
        self.dynamic_multimask_stability_thresh = dynamic_multimask_stability_thresh

    def forward(
        self,
        image_embeddings: Tensor,
        image_pe: Tensor,
        sparse_prompt_embeddings: Tensor,
        dense_prompt_embeddings: Tensor,
        multimask_output: bool,
        repeat_image: bool,
        high_res_features: Optional[List[Tensor]] = None,
    ) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
        """Predict masks.

        image_embeddings: (B, C, h, w), or (1, C, h, w) with repeat_image=True (shared by all B prompts).
        image_pe: (1, C, h, w) positional encoding of the grid (PromptEncoder.get_dense_pe()).
        sparse_prompt_embeddings: (B, N, C); dense_prompt_embeddings: (B, C, h, w).
        multimask_output: return the K alternative masks instead of one.
        high_res_features: [feat_s0 (B, C/8, 4h, 4w), feat_s1 (B, C/4, 2h, 2w)], already projected by
          conv_s0 / conv_s1; required when use_high_res_features.
        Returns:
          masks (B, K or 1, 4h, 4w) logits; iou_pred (B, K or 1); sam_tokens_out (B, K or 1, C) decoder
          tokens for the object pointer; object_score_logits (B, 1).
        """
        all_masks, all_ious, mask_tokens_out, object_score_logits = self.predict_masks(
            image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings, repeat_image,
            high_res_features,
        )
        if multimask_output:
            masks, iou_pred = all_masks[:, 1:], all_ious[:, 1:]
        elif self.dynamic_multimask_via_stability and not self.training:
            masks, iou_pred = self._dynamic_multimask_via_stability(all_masks, all_ious)
        else:
            masks, iou_pred = all_masks[:, :1], all_ious[:, :1]
        # The single-mask token is the object pointer, except with multimask output when configured
        # to use the multimask tokens (SAM 2 trains pointers from the single-mask token otherwise).
        if multimask_output and self.use_multimask_token_for_obj_ptr:
            sam_tokens_out = mask_tokens_out[:, 1:]
        else:
            sam_tokens_out = mask_tokens_out[:, :1]
        return masks, iou_pred, sam_tokens_out, object_score_logits

    def predict_masks(
        self,
        image_embeddings: Tensor,
        image_pe: Tensor,
        sparse_prompt_embeddings: Tensor,
        dense_prompt_embeddings: Tensor,
        repeat_image: bool,
        high_res_features: Optional[List[Tensor]] = None,
    ) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
        """All K+1 masks and IoUs. Returns masks (B, K+1, 4h, 4w), iou_pred (B, K+1),
        mask tokens (B, K+1, C), object_score_logits (B, 1). Arguments as in `forward`."""
        # Output tokens: [object-score token], IoU token, K+1 mask tokens, then the prompt tokens.
        learned = [self.iou_token.weight, self.mask_tokens.weight]
        if self.pred_obj_scores:
            learned.insert(0, self.obj_score_token.weight)
        first_iou = 1 if self.pred_obj_scores else 0
        batch = sparse_prompt_embeddings.shape[0]
        output_tokens = torch.cat(learned, dim=0).unsqueeze(0).expand(batch, -1, -1)
        tokens = torch.cat((output_tokens.to(sparse_prompt_embeddings.dtype), sparse_prompt_embeddings), dim=1)

        if repeat_image:
            image_embeddings = image_embeddings.expand(batch, -1, -1, -1)
        src = image_embeddings + dense_prompt_embeddings
        if image_pe.shape[0] != 1:
            raise ValueError(f"image_pe must have batch size 1 (get_dense_pe()), got {image_pe.shape[0]}")
        _, channels, height, width = src.shape

        hs, image_tokens = self.transformer(src, image_pe, tokens)
        iou_token_out = hs[:, first_iou]
        mask_tokens_out = hs[:, first_iou + 1 : first_iou + 1 + self.num_mask_tokens]

        src = image_tokens.transpose(1, 2).reshape(batch, channels, height, width)
        deconv1, norm1, act1, deconv2, act2 = self.output_upscaling
        if self.use_high_res_features:
            if high_res_features is None:
                raise ValueError("use_high_res_features=True needs high_res_features=[feat_s0, feat_s1]")
            feat_s0, feat_s1 = high_res_features
            upscaled = act1(norm1(deconv1(src) + feat_s1))
            upscaled = act2(deconv2(upscaled) + feat_s0)
        else:
            upscaled = act2(deconv2(act1(norm1(deconv1(src)))))

        hyper_in = torch.stack(
            [mlp(mask_tokens_out[:, index]) for index, mlp in enumerate(self.output_hypernetworks_mlps)], dim=1
        )
        masks = (hyper_in @ upscaled.flatten(2)).unflatten(2, upscaled.shape[2:])

        iou_pred = self.iou_prediction_head(iou_token_out)
        if self.pred_obj_scores:
            object_score_logits = self.pred_obj_score_head(hs[:, 0])
        else:
            # Without a presence head the object is assumed present: sigmoid(10) ~ 1.
            object_score_logits = iou_pred.new_full((batch, 1), 10.0)
        return masks, iou_pred, mask_tokens_out, object_score_logits

    def _stability_scores(self, mask_logits: Tensor) -> Tensor:
        """IoU between the masks thresholded at +delta and -delta: (B, M, H, W) -> (B, M) float."""
        flat = mask_logits.flatten(-2)
        delta = self.dynamic_multimask_stability_delta
        inner = (flat > delta).sum(dim=-1).float()
        outer = (flat > -delta).sum(dim=-1).float()
        return torch.where(outer > 0, inner / outer.clamp(min=1.0), torch.ones_like(outer))

    def _dynamic_multimask_via_stability(self, all_masks: Tensor, all_ious: Tensor) -> Tuple[Tensor, Tensor]:
        """Single-mask output that falls back to the highest-IoU multimask output when unstable.

        all_masks (B, K+1, H, W), all_ious (B, K+1) -> masks (B, 1, H, W), ious (B, 1).
        """
        best = all_ious[:, 1:].argmax(dim=-1, keepdim=True) + 1  # (B, 1) index among all K+1 outputs
        best_iou = all_ious.gather(1, best)
        best_mask = all_masks.gather(1, best[:, :, None, None].expand(-1, -1, *all_masks.shape[2:]))
        single_mask, single_iou = all_masks[:, :1], all_ious[:, :1]
        stable = self._stability_scores(single_mask) >= self.dynamic_multimask_stability_thresh  # (B, 1)
        masks = torch.where(stable[:, :, None, None], single_mask, best_mask)
        ious = torch.where(stable, single_iou, best_iou)
        return masks, ious
