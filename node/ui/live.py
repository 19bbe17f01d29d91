"""What updates by itself: the node's event feed as Server-Sent Events, and the audit with its progress bar.

``GET /ui/events`` streams :meth:`MarketAPI.subscribe`'s notes as SSE
(``event: listing|withdrawal|offer|trade|photo``, ``data: <hex id>``), first a
``resync`` (re-read: the page may have missed a note before the stream opened), with a
comment line every :data:`KEEPALIVE_S` so proxies and the browser know it is
alive; pages use htmx's SSE extension to re-fetch the fragment a note
concerns. Nothing polls: a page changes when the node says something changed.

The audit runs as one job per node (:class:`AuditJobs`): ``POST /ui/audit``
starts it, ``GET /ui/audit`` shows it, ``GET /ui/audit/events`` streams its
progress (at most :data:`PROGRESS_HZ` notes a second) and ``GET
/ui/audit/proof/{n}`` downloads the proof a finding carries.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import trio
from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response, StreamingResponse

from ..contract import MarketAPI, UnknownObject
from .render import render

KEEPALIVE_S = 15.0
PROGRESS_HZ = 5.0
router = APIRouter()


def _sse(event: str, data: str) -> bytes:
    return f"event: {event}\ndata: {data}\n\n".encode()


@router.get("/ui/events")
async def events(request: Request) -> Response:
    """The node's live feed as Server-Sent Events."""
    market: MarketAPI = request.app.state.market

    async def stream() -> AsyncIterator[bytes]:
        with market.subscribe() as sub:
            # Sent at once, and after subscribing: the page was rendered before this stream opened, and
            # whatever changed in between (a trade completing as the page reloads after a form post) sent
            # its note to nobody. Live regions re-read on "resync", so nothing falls into that gap.
            yield _sse("resync", "-")
            while True:
                event = await sub.next(KEEPALIVE_S)
                yield b": keepalive\n\n" if event is None else _sse(event.kind, event.id or "-")

    return StreamingResponse(stream(), media_type="text/event-stream", headers={"X-Accel-Buffering": "no"})


# --- the audit ---


@dataclass
class AuditJob:
    started: float = field(default_factory=time.time)
    done: int = 0
    total: int = 0
    report: dict[str, Any] | None = None
    error: str | None = None
    changed: trio.Event = field(default_factory=trio.Event)

    @property
    def running(self) -> bool:
        return self.report is None and self.error is None

    @property
    def percent(self) -> int:
        return 100 if not self.running else (100 * self.done // self.total if self.total else 0)

    def poke(self) -> None:
        self.changed.set()
        self.changed = trio.Event()


class AuditJobs:
    """The node's one audit job (a new one replaces a finished one; one runs at a time)."""

    def __init__(self) -> None:
        self.job: AuditJob | None = None

    async def run(self, market: MarketAPI) -> None:
        job = self.job = AuditJob()
        token = trio.lowlevel.current_trio_token()
        last = 0.0

        def progress(done: int, total: int) -> None:  # called from the audit's worker thread
            nonlocal last
            job.done, job.total = done, total
            if time.monotonic() - last >= 1 / PROGRESS_HZ:
                last = time.monotonic()
                token.run_sync_soon(job.poke)  # thread-safe, and fine from the trio thread too

        try:
            report = await market.audit(progress)
            job.report = report.to_json()
        except Exception as exc:
            job.error = f"{type(exc).__name__}: {exc}"
        job.poke()


@router.post("/ui/audit")
async def start_audit(request: Request) -> Response:
    """Start an audit of every chain held (unless one runs) and show it."""
    jobs: AuditJobs = request.app.state.audits
    if jobs.job is None or not jobs.job.running:
        # a system task: the audit outlives this request (the page shows it, however often reloaded)
        trio.lowlevel.spawn_system_task(jobs.run, request.app.state.market)
        await trio.sleep(0)
    return RedirectResponse("/ui/audit", status_code=303)


@router.get("/ui/audit")
async def audit_page(request: Request) -> Response:
    """The audit: start it, watch its progress, read every finding with its evidence."""
    return render(request, "audit.html", title="Audit", job=request.app.state.audits.job)


@router.get("/ui/audit/part")
async def audit_part(request: Request) -> Response:
    """The audit's progress or findings, the fragment the live page swaps in."""
    return render(request, "_audit.html", job=request.app.state.audits.job)


@router.get("/ui/audit/events")
async def audit_events(request: Request) -> Response:
    """The audit's progress as Server-Sent Events (``progress``, then ``done``)."""
    jobs: AuditJobs = request.app.state.audits

    async def stream() -> AsyncIterator[bytes]:
        yield b": live\n\n"
        while (job := jobs.job) is not None and job.running:
            with trio.move_on_after(KEEPALIVE_S):
                await job.changed.wait()
            yield _sse("progress", str(job.percent))
        yield _sse("done", "100")
        await trio.sleep_forever()  # the page closes the stream; the browser would reconnect otherwise

    return StreamingResponse(stream(), media_type="text/event-stream")


@router.get("/ui/audit/proof/{index}")
async def audit_proof(request: Request, index: int) -> Response:
    """The proof a finding carries (a fork or over-commitment proof: CBOR any node can verify), as a file."""
    job = request.app.state.audits.job
    findings = job.report["findings"] if job is not None and job.report else []
    if not 0 <= index < len(findings) or not findings[index].get("proof"):
        raise UnknownObject(f"no finding {index} with a proof in the last audit")
    finding = findings[index]
    name = f"swapmeet-{finding['kind']}-proof-{index}.cbor"
    return Response(
        bytes.fromhex(finding["proof"]),
        media_type="application/cbor",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )
