"""Pictures to tensors: decoding with limits (images), the preprocessing each set of weights
expects (transforms), the ILSVRC class list bundled as synset_words.txt (categories), labelled
image folders and label files (datasets), and batching with worker processes (batching).

May import: the foundation modules (errors, paths, devices) only: the model layer sits above this one,
because a model carries the preprocessing its weights were measured with (as torchvision's
``models`` import its ``transforms``).
"""
