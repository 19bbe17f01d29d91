"""Yamux with its receive window enforced: a peer cannot make us buffer more than it was granted.

py-libp2p 0.8.1's Yamux counts the bytes a peer sends against the stream's receive
window, logs "peer exceeded receive window" when it goes past it, and buffers the
bytes anyway, for as long as the connection lives (docs/LIBP2P.md §32): a peer that
ignores flow control on a stream nobody reads (say, after our handler answered)
grows our memory without limit. go-yamux treats that as a protocol error.

Here (:func:`enforce_window`, on every new connection) each stream's buffer
refuses a DATA frame larger than what is left of the window the peer was
granted: the frame is dropped (Yamux then marks the stream closed), nothing of
it is buffered, and the peer is reported to ``on_violation`` once per
connection, so the host can cut it off. An honest peer never sends past its
window, so it never notices.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from libp2p.peer.id import ID
from libp2p.stream_muxer.yamux.yamux import Yamux

log = logging.getLogger("swapmeet.node.host")

Violation = Callable[[ID], None]


class WindowExceeded(OSError):
    """A peer sent more on a stream than its receive window allowed."""


class _WindowedBuffer(bytearray):
    """One stream's receive buffer; ``extend`` is where Yamux adds a DATA frame's bytes."""

    def __init__(self, guard: _Guard, stream_id: int, data: bytes = b"") -> None:
        super().__init__(data)
        self._guard = guard
        self._stream_id = stream_id

    def extend(self, data: Any) -> None:
        stream = self._guard.conn.streams.get(self._stream_id)
        # Yamux lowers recv_window by the frame's length only after this call: the frame must fit in it.
        if stream is not None and len(data) > max(stream.recv_window, 0):
            self._guard.violated(self._stream_id, len(data), stream.recv_window)
            raise WindowExceeded(f"stream {self._stream_id}: {len(data)} bytes past a window of {stream.recv_window}")
        super().extend(data)


class _WindowedBuffers(dict[int, bytearray]):
    """``Yamux.stream_buffers`` whose buffers enforce the window (Yamux creates each as ``bytearray()``)."""

    def __init__(self, guard: _Guard, existing: dict[int, bytearray]) -> None:
        super().__init__()
        self._guard = guard
        for stream_id, buffer in existing.items():
            self[stream_id] = buffer

    def __setitem__(self, stream_id: int, buffer: bytearray) -> None:
        super().__setitem__(stream_id, _WindowedBuffer(self._guard, stream_id, bytes(buffer)))


class _Guard:
    """What the buffers of one connection share: the connection, and whom to tell about a violation."""

    def __init__(self, conn: Any, on_violation: Violation) -> None:
        self.conn = conn
        self._on_violation = on_violation
        self._reported = False

    def violated(self, stream_id: int, size: int, window: int) -> None:
        if self._reported:  # one line and one disconnect per connection, whatever the peer keeps sending
            return
        self._reported = True
        log.info(
            "peer %s sent %d bytes past the receive window (%d) on a stream: dropped, disconnecting",
            self.conn.peer_id,
            size,
            window,
        )
        self._on_violation(self.conn.peer_id)


def enforce_window(muxed_conn: Any, on_violation: Violation) -> None:
    """Make a new connection's Yamux refuse bytes past each stream's window (a no-op for other muxers).

    Called when the connection is reported open: the library builds its Yamux itself (it ignores the
    muxer class it is given), so the buffers are swapped on the instance. What arrived before the
    swap was within the initial window, and stays.
    """
    if isinstance(muxed_conn, Yamux) and not isinstance(muxed_conn.stream_buffers, _WindowedBuffers):
        muxed_conn.stream_buffers = _WindowedBuffers(_Guard(muxed_conn, on_violation), muxed_conn.stream_buffers)
