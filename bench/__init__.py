"""The in2n benchmark: in2n ("ours") against the original Instruct-NeRF2NeRF implementation's way of editing
("reference"), on the CPU or on CUDA, with a random-weight InstructPix2Pix of the real shape (nothing downloaded).

Run it with `python scripts/bench.py` (or `make bench`); bench/README.md has the method and the numbers. It lives
beside the in2n package and is not installed with it. Modules:

- cli: the command line; config: the options and the plan they make on a device; devices: choosing, synchronising
  and warming up the device;
- edits: the time and memory of an edit, component by component; reference_editor: the original's way of editing;
- training, runs, workers, reference_render: ns-train and ns-render measurements, each in a process of its own;
- profiling: timing; memory: peak memory per phase; machine: what a run ran on; report: bench.md;
- harness: a whole run.
"""
