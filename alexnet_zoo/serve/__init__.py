"""The search service: ``alexnet-zoo serve INDEX``, an ASGI app (FastAPI on Starlette, run by uvicorn)
that answers an index folder's queries over HTTP as JSON, and the one web page that uses them.

``app`` (:func:`create_app`: the routes, loading the index and model once), ``schemas`` (the typed
request and response bodies, so OpenAPI at ``/docs`` describes them), ``api_errors`` (the one error
body and the 4xx family), ``uploads`` (an uploaded picture's bytes, within a size limit, checked and
decoded by :mod:`alexnet_zoo.data.images`), ``batching`` (concurrent picture queries gathered into
one forward pass), ``access`` (the bearer token and the rule for binding beyond localhost),
``service`` (the index and model loaded once; searches, neighbours, near-duplicate groups) and
``page.html`` (the page: script and style inline, so it works offline). The command line is :mod:`alexnet_zoo.cli.serve`. FastAPI, uvicorn and python-multipart
are the optional extra ``serve``.

May import: retrieval, eval, factory, weights, models, data, ops and the foundation modules (never
cli, train or benchmarks).
"""
