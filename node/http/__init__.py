"""The node's local API over HTTP+JSON on 127.0.0.1: the face of :mod:`swapmeet.node.contract`.

- :mod:`.app`: ``create_app(market, trading, token)``, the FastAPI app, and how errors become JSON.
- :mod:`.routes`: the endpoints, one function each (the table is in its docstring).
- :mod:`.models`: the request and response models (the OpenAPI schema).
- :mod:`.guard`: the outermost ASGI middleware: bearer token and body size cap on every request.
- :mod:`.server`: hypercorn's trio worker on ``127.0.0.1:<port>``.

The web interface (:mod:`swapmeet.node.ui`) is served by the same app under ``/ui``, behind its own
guard (session cookie instead of the token; see :mod:`.guard`).

The token lives in ``<home>/api.cookie`` (:mod:`swapmeet.node.cookie`); JSON shapes are
:mod:`swapmeet.node.jsonview`'s.
"""
