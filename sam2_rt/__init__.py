"""sam2_rt: real-time SAM 2 / SAM 2.1 in pure PyTorch (no ROS imports)."""
