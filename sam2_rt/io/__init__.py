"""Files and messages around the tracker: video and bag input, image message encodings, prompt files, and the outputs written per frame."""
