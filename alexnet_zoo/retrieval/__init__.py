"""Image search: the feature extractor (any layer; fc7 is the paper's Figure 4 feature), sharded
resumable extraction, the FAISS vector index (torch-free: numpy and faiss only), near-duplicate
groups, queries and result grids.

``features`` (the extractor), ``extraction`` (the job) and ``shards`` (the features folder format);
the index modules ``index`` (VectorIndex), ``index_policy`` (which index), ``index_tuning`` (the
exact oracle and nprobe / efSearch), ``index_gpu`` (faiss-GPU placement), ``index_dedupe``
(near-duplicate pairs and groups), ``dedupe_eval`` (pairs scored against labelled groups),
``index_folder`` (the folder on disk), ``path_lists`` and ``vector_checks``; ``query`` (search by
picture), ``grids`` (pictures of results) and ``pr_curve`` (a precision-recall PNG); ``benchmark_sets`` (the
retrieval benchmarks' layouts), ``metrics`` (AP, N-S, recall@k; numpy only) and ``benchmark_eval``
(a benchmark run by exact search). The command line is
:mod:`alexnet_zoo.cli.search`.

May import: eval, factory, weights, models, data, ops and the foundation modules; the index modules
import none of those (numpy, faiss, stdlib and alexnet_zoo.errors / alexnet_zoo.paths only), so a
search service need not load torch.
"""
