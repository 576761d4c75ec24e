"""Evaluation: policy rollouts without a judge, per-category accuracy with confidence
intervals, paired significance, tool-selection entropy, and a readable report."""
