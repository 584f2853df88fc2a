"""Model stages: TextEncoder, Denoiser and Decoder as plain Python classes, and the tiny checkpoint."""
