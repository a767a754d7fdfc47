"""Quantitative evaluation of an edit: CLIP metrics between renders of the original and the edited scene."""
