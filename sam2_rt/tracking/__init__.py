"""The streaming tracker: prompts, per-object state, the bounded memory bank and one step per frame."""
