"""``swapmeet demo [--nodes N] [--json] [--keep]``: a local market of real nodes plays a story.

The story itself is :mod:`swapmeet.cli.demo.play` (cast and script in
:mod:`swapmeet.cli.demo.story`); this module only prints it. Human output is
one narration line per step, ``[ 12.3s] text`` (peer names in colour on a
terminal only), then a summary table. ``--json`` prints one JSON object per
line instead: each step ``{"step", "text", "t", ...fields}`` and, as the last
line, the summary ``{"step": "summary", "t", "ok", "nodes", "exchanges_complete",
"multi_party", "audit_findings", "cheater_findings", "cheater", "cheater_evidence",
"exchanges", "peers", "timings", "failed", "elapsed_s"}`` (``failed`` and
``elapsed_s`` are null when they do not apply). Exit 3 and Ctrl-C print no summary.

Exit codes: 0 the story played as expected; 1 a step's expectation failed (the
error names the step; a summary with ``"ok": false`` and ``"failed"`` is still
printed); 2 bad usage; 3 the nodes could not be started; 130 interrupted
(Ctrl-C). Every node process is stopped in every case, SIGTERM included.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from .context import App, pass_app
from .output import print_table, short_peer

MIN_NODES = 4  # = swapmeet.cli.demo.story.MIN_NODES (not imported here: keep `swapmeet --help` fast)
MAX_NODES = 12
EXIT_INTERRUPTED = 130

_COLOURS = ("cyan", "green", "magenta", "blue", "bright_red", "yellow", "bright_cyan", "bright_green")
_ALERT_STEPS = {"cheat", "double-sale", "audit"}


class _Printer:
    """Prints events as they come: JSON lines, or narration (rich markup only on a terminal)."""

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json
        self.tty = sys.stdout.isatty() and not as_json
        self.names: dict[str, str] = {}  # peer name -> colour
        self.console: Any = None
        if self.tty:
            from rich.console import Console

            self.console = Console(highlight=False)

    def __call__(self, event: dict[str, Any]) -> None:
        if self.as_json:
            sys.stdout.write(json.dumps(event, ensure_ascii=False) + "\n")
            sys.stdout.flush()
            return
        if "peers" in event and isinstance(event["peers"], dict):
            self.names = {name: _COLOURS[i % len(_COLOURS)] for i, name in enumerate(event["peers"])}
        if event.get("step") == "summary":
            self._summary(event)
            return
        prefix = f"[{event.get('t', 0):5.1f}s] "
        if not self.tty:
            click.echo(prefix + str(event.get("text", "")))
            return
        from rich.text import Text

        line = Text()
        line.append(prefix, style="dim")
        body = Text(str(event.get("text", "")))  # plain Text: titles are data, never markup
        if event.get("step") in _ALERT_STEPS:
            body.stylize("bold")
        for name, colour in self.names.items():
            body.highlight_words([name], style=f"bold {colour}")
        line.append_text(body)
        self.console.print(line)

    def _summary(self, s: dict[str, Any]) -> None:
        click.echo("")
        rows = [
            [
                p["name"],
                p["role"],
                short_peer(p["peer_id"]),
                str(p["trades"]),
                str(p["chain"]),
                _verdict(p["findings"]),
            ]
            for p in s.get("peers", [])
        ]
        print_table(["PEER", "ROLE", "PEER ID", "TRADES", "CHAIN", "OWN AUDIT"], rows)
        click.echo("")
        evidence = s.get("cheater_evidence") or []
        proof = "; ".join(
            f"{e.get('kind')} listing {str(e.get('listing', ''))[:12]}: exchanges "
            + ", ".join(str(x)[:12] for x in e.get("exchanges", []))
            for e in evidence
        )
        lines = [
            ("nodes", str(s.get("nodes"))),
            ("exchanges complete", f"{s.get('exchanges_complete')} ({s.get('multi_party')} multi-party)"),
            ("findings about honest peers", str(s.get("audit_findings"))),
            (
                "findings about the cheater",
                f"{s.get('cheater_findings')} ({s.get('cheater')})" + (f": {proof}" if proof else ""),
            ),
        ]
        if "elapsed_s" in s:
            lines.append(("played in", f"{s['elapsed_s']} s"))
        if not s.get("ok", True):
            failed = s.get("failed", {})
            lines.append(("FAILED at step", f"{failed.get('step')}: {failed.get('reason')}"))
        width = max(len(k) for k, _ in lines)
        for key, value in lines:
            click.echo(f"{key:<{width}}  {value}")


def _verdict(findings: int | None) -> str:
    if findings is None:
        return "-"  # no chain: nothing to audit
    return "clean" if findings == 0 else f"{findings} finding" + ("" if findings == 1 else "s")


@click.command("demo")
@click.option(
    "--nodes",
    type=click.IntRange(MIN_NODES, MAX_NODES),
    default=5,
    show_default=True,
    help="How many node processes to start (Ada, Ben, Cai, Dee, Eve, then bystanders).",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print the narration as JSON lines; the last line is the summary (unless the nodes could not start).",
)
@click.option("--keep", is_flag=True, help="Keep the temporary homes and logs afterwards (and say where).")
@pass_app
def demo(app: App, nodes: int, as_json: bool, keep: bool) -> None:
    """Start a local market of real nodes and play a story: listings, a counter-offer, a 3-party ring,
    confirmations and ratings, a cheater selling one item twice, and the audit that catches her.

    Runs on 127.0.0.1 with temporary homes (your own node and home are not touched) in well under a
    minute, and stops every node it started, also on Ctrl-C. Exit code 0 when the story played as
    expected, 1 if a step failed (named in the error), 3 if the nodes could not be started.
    """
    from .demo.play import Demo, DemoEnvironmentError, DemoFailed

    printer = _Printer(as_json)
    try:
        Demo(nodes, emit=printer, keep_dir=keep).run()
    except (DemoFailed, DemoEnvironmentError) as err:
        if err.details:
            click.echo(err.details, err=True)
        raise
    except KeyboardInterrupt:
        if as_json:
            printer({"step": "interrupted", "text": "interrupted: every node was stopped"})
        click.echo("swapmeet: demo interrupted; every node was stopped", err=True)
        click.get_current_context().exit(EXIT_INTERRUPTED)
