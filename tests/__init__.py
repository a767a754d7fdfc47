"""The test suite. Imported before any test module or conftest, so the environment below is in place before
huggingface_hub is imported: it reads these variables once, at import. The tests use an empty cache of their own and
never the network."""

import atexit
import os
import shutil
import tempfile

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_HOME"] = tempfile.mkdtemp(prefix="in2n-tests-hf-home-")
atexit.register(shutil.rmtree, os.environ["HF_HOME"], ignore_errors=True)
os.environ.setdefault("WANDB_MODE", "disabled")
