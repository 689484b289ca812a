"""Detections in, tracks out: matching a detector's boxes to tracked objects, starting new ones and re-acquiring lost ones."""
