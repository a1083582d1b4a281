"""The names of the inference precisions, apart from :mod:`alexnet_zoo.eval.precision` so that
readers of files which record one (an index folder's ``info.json``) check it without importing torch."""

from __future__ import annotations

__all__ = ["PRECISIONS", "PRECISION_HELP"]

PRECISIONS = ("auto", "fp32", "bf16", "fp16", "int8")
PRECISION_HELP = ("arithmetic: auto = fp16 on CUDA, int8 for quantised weights, bf16 on CPUs where it measures faster, "
                  "else fp32; int8 needs weights made once by 'alexnet-zoo quantize' (see docs/deploy.md)")
