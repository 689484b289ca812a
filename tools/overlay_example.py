"""Draw docs/overlay_example.png, the README's picture of the overlay (`sam2_rt.io.overlay.draw_overlay`).

The frame is generated (three shapes on a textured background) and the masks are the shapes' own, so the
picture shows what the overlay draws, not a tracking result:

    python tools/overlay_example.py [--output docs/overlay_example.png]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np
import torch

from sam2_rt.io.frame_outputs import FrameOutputs
from sam2_rt.io.overlay import draw_overlay
from sam2_rt import ObjectState, TrackResult
from sam2_rt.tracking.transforms import boxes_from_masks

HEIGHT, WIDTH = 270, 480


def scene() -> tuple:
    """(H, W, 3) uint8 RGB frame and (3, H, W) bool masks of its disc, square and ellipse."""
    rng = np.random.default_rng(0)
    coarse = rng.uniform(70, 130, size=(4, 6, 1)).astype(np.float32) * np.array([0.8, 0.9, 1.0], np.float32)
    rgb = cv2.resize(coarse, (WIDTH, HEIGHT), interpolation=cv2.INTER_CUBIC).astype(np.uint8)
    masks = np.zeros((3, HEIGHT, WIDTH), dtype=np.uint8)
    cv2.circle(masks[0], (130, 160), 55, 1, -1)
    cv2.rectangle(masks[1], (250, 70), (340, 160), 1, -1)
    cv2.ellipse(masks[2], (390, 205), (60, 32), 15, 0, 360, 1, -1)
    for mask, colour in zip(masks, ((200, 70, 60), (70, 150, 200), (220, 190, 90))):
        rgb[mask.astype(bool)] = colour
    return rgb, masks.astype(bool)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    default = Path(__file__).resolve().parents[1] / "docs" / "overlay_example.png"
    parser.add_argument("--output", type=Path, default=default, help=f"PNG file to write (default {default})")
    args = parser.parse_args()
    rgb, masks = scene()
    mask_tensor = torch.from_numpy(masks)
    result = TrackResult(
        frame_index=0, object_ids=[1, 2, 3], masks=mask_tensor, logits=mask_tensor.float() * 8 - 4,
        low_res_logits=torch.zeros(3, 1, 4, 4), ious=torch.tensor([0.94, 0.88, 0.81]),
        presence=torch.tensor([0.99, 0.97, 0.93]), states=[ObjectState.TRACKING] * 3,
        boxes=boxes_from_masks(mask_tensor),
    )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(args.output), draw_overlay(rgb, FrameOutputs.from_result(result), alpha=0.5),
                [cv2.IMWRITE_PNG_COMPRESSION, 9])
    print(args.output)


if __name__ == "__main__":
    main()
