"""The node's `overlay` image: `sam2_rt.io.overlay` (numpy + OpenCV, shared with `sam2-rt track --output`).

    draw_overlay(rgb, outputs, alpha, banner=None) -> BGR image
"""
from sam2_rt.io.overlay import MAX_OVERLAY_OBJECTS, draw_banner, draw_overlay, object_colour

__all__ = ["MAX_OVERLAY_OBJECTS", "draw_banner", "draw_overlay", "object_colour"]
