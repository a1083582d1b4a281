"""Pretrained weights: the spec table (specs), where files live upstream (sources), download with
sha256 checks (download, digests), our safetensors store and cache (store), upstream formats read
into our names (convert/), model cards (cards) and upload to the Hub (publish).

May import: models, data, ops and the foundation modules. Never eval, retrieval, train or cli.
"""
