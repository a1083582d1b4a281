"""Deployment: the model written for other runtimes - an ONNX graph of standard operators
(onnx_graph) and a traced TorchScript program (torchscript) - each carrying what a consumer needs
besides the weights (the preprocessing, the architecture, the weights' name and the class labels:
metadata), so it runs without this package - and the model quantised to int8 for the CPU, calibrated
once on real pictures (quantize).

May import: factory, weights, models, data, ops and the foundation modules.
"""
