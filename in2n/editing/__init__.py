"""Image editors behind one small interface: the diffusion model, and a deterministic reference."""
