"""The Iterative Dataset Update: which views are edited when, the edits in flight, what is written back and where,
how far the scene is from its edits, and the state a checkpoint keeps of it. Independent of nerfstudio's trainer: the
pipeline drives it before every training step."""
