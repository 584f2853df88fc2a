"""wanserve control plane: metric sources, the pure policy engine and its actuators."""
