"""Runs on disk: checkpoints written atomically and found again, a run's folder read, a checkpoint that does not fit
the options explained, and nerfstudio's checkpoints made loadable on today's torch."""
