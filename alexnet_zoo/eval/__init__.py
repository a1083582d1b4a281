"""Evaluation: the crop protocols of the paper (centre, 10-crop, dense), top-k metrics, the
evaluation loop, classifying files, and the inference precision (fp32/bf16/fp16) to run at.

May import: factory, weights, models, data, ops and the foundation modules.
"""
