"""Evaluation: the crop protocols of the paper (centre, 10-crop, dense: protocols), top-k ranking
and accuracy (metrics), the evaluation loop (loop), the model-only throughput ceiling (throughput),
classifying files (classify), and the inference precision (fp32/bf16/fp16/int8) to run at (precision;
its names alone, without torch: precision_names).

May import: factory, weights, models, data, ops and the foundation modules.
"""
