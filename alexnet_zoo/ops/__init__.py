"""The numerics under the network: local response normalisation, Caffe-rounded max pooling, the
oneDNN and Winograd convolution paths, the per-layer cache of prepared weights, what the CPU can do
(capabilities), the arithmetic of pooled sizes (geometry), the native C kernels (kernels/) and the
Triton LRN kernels for CUDA (lrn_triton; opt-in until a GPU run has timed them).

May import: torch, the standard library, triton (lazily, only in lrn_triton's launch path), and
alexnet_zoo's foundation modules (errors, paths, devices). Nothing here knows about models, weights or pictures.
"""
