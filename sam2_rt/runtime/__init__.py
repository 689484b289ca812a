"""How the model's components run: eager, torch.compile or TensorRT, at fixed shapes built before the first frame, with their caches."""
