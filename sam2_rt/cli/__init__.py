"""The `sam2-rt` command: track a video or bag from the shell and write masks, overlays, JSON lines or a bag."""
