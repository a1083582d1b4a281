"""The network: its configuration (with the one ``ARCHS`` table and ``arch_of``), the ``AlexNet``
module with its dense and features-only forms, its int8 form built from stored integers
(quantized), the layer summary and the conv1 filter picture.

May import: ops, data (the model carries the preprocessing its weights expect) and the foundation
modules. Not weights: a model is built without knowing where weights come from.
"""
