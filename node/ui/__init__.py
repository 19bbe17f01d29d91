"""swapmeet.node.ui: the web interface, served by the node under ``/ui`` on the local API's server.

- :mod:`.app`: ``create_ui(market, trading, sessions)``: the pages' FastAPI app behind its guard.
- :mod:`.guard`: Host check, session cookie, cross-site refusal (CSRF token, Origin), security headers.
- :mod:`.session`: one-time login tokens exchanged for session cookies.
- :mod:`.routes`: the pages and form actions, one function each (the table is in its docstring).
- :mod:`.live`: Server-Sent Events from the node's event feed; the audit job and its progress.
- :mod:`.forms`: the publish form, built from ``ListingSpec`` by type.
- :mod:`.views`, :mod:`.render`: how objects are shown; the Jinja2 templates.
- ``templates/`` and ``static/`` (package data): server-rendered pages, htmx and its SSE extension
  vendored (nothing is fetched from outside at run time), the stylesheet, the login script.

It talks to the node only through :mod:`swapmeet.node.contract`.
"""
