"""SAM 2 / SAM 2.1 and EdgeTAM as pure nn.Modules (parameter names equal Meta's state_dict keys), and the model
table (`config.py`)."""
