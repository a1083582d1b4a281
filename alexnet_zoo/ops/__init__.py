"""The numerics under the network: local response normalisation, Caffe-rounded max pooling, the
oneDNN and Winograd convolution paths, the per-layer cache of prepared weights, what the CPU can do
(capabilities), the arithmetic of pooled sizes (geometry) and the native C kernels (kernels/).

May import: torch, the standard library, and alexnet_zoo's foundation modules (errors, paths,
devices). Nothing here knows about models, weights or pictures.
"""
