"""Inference on raw videos for predict.py: which frames each window needs (windows.py), the
streaming pass that decodes once and scores windows in batches (scorer.py), and what is made
of the scores (outputs.py: segments, CSV, timeline plot, annotated video)."""
