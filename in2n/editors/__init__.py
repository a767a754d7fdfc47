"""The editors of training views, behind one interface: the instruction editors (InstructPix2Pix, the editors
fine-tuned from it, SDXL InstructPix2Pix) and the deterministic negative editor; choosing, loading and compiling
them."""
