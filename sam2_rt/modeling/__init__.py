"""Pure nn.Modules of SAM 2 / SAM 2.1. Parameter names equal Meta's state_dict keys."""
