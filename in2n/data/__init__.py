"""Training data whose images the edit replaces in place."""
