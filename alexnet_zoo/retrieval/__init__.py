"""Image search: the feature extractor (any layer; fc7 is the paper's Figure 4 feature), sharded
resumable extraction, the FAISS vector index (torch-free: numpy and faiss only), near-duplicate
groups, queries and result grids.

May import: eval, factory, weights, models, data, ops and the foundation modules; the index modules
import none of those (numpy and faiss only), so a search service need not load torch.
"""
