"""Files and messages around the tracker: video and bag input, image message encodings, prompt files, the outputs written per frame, and synthetic clips (benchmarks, tests)."""
