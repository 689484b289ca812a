"""Meta's checkpoints: the named models' files, their download and strict, weights-only loading, and random weights for tests."""
