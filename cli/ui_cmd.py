"""``swapmeet ui [--no-browser] [--print-url]``: open the web interface of this home's node in a browser.

The node serves the interface itself, on its local API's server (127.0.0.1
only). This command asks the running node for a one-time login address
(``POST /v1/ui/token`` with the API token from ``api.cookie``) and opens it
with the user's browser (Python's :mod:`webbrowser`); the token sits in the
address's fragment, so no server log or Referer header ever sees it, and the
page trades it for a session cookie at once. ``--print-url`` prints the address
instead (to open elsewhere on this machine); ``--no-browser`` opens nothing.
When no node runs for the home, it says in one line how to start one (exit 3).
"""

from __future__ import annotations

import click

from .context import App, pass_app


@click.command("ui")
@click.option("--no-browser", is_flag=True, help="Do not open a browser.")
@click.option("--print-url", is_flag=True, help="Print the one-time login address instead of opening it.")
@pass_app
def ui(app: App, no_browser: bool, print_url: bool) -> None:
    """Open the node's web interface in your browser (the node must be running)."""
    answer = app.client().ui_token()
    url, ttl = answer["url"], answer["expires_in_s"]
    if print_url:
        click.echo(url)
        return
    if no_browser:
        click.echo(f"the web interface is at {url.split('/ui/', 1)[0]}/ui/ (run with --print-url for a login link)")
        return
    import webbrowser  # here: it probes for browsers at import

    if webbrowser.open(url):
        click.echo(f"opened the web interface in your browser (the login link works once, within {ttl}s)")
    else:
        click.echo(f"no browser found: open this address within {ttl}s (it works once):\n{url}")


COMMANDS = [ui]
