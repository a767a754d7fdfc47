"""Generated assets for offline runs, tests and the benchmark: the procedural scene, its orbit camera path, random
models of the real architectures (InstructPix2Pix, CLIP, LPIPS's AlexNet), and the small nerfacto for CPUs."""
