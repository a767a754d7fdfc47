"""Editing Gaussian splats: splatfacto (nerfstudio 1.1.5, gsplat 1.4.0) under the same edit loop as the NeRF edit."""
