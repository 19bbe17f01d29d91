"""Framed streams: unsigned-varint length-prefixed frames on a libp2p stream, and handler bookkeeping."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import trio
from libp2p.abc import INetStream
from libp2p.exceptions import BaseLibp2pError
from libp2p.network.stream.exceptions import StreamEOF, StreamReset
from libp2p.utils.varint import encode_uvarint

from .errors import EndOfStream, FrameTooLargeError, StreamClosedError

log = logging.getLogger("swapmeet.node.host")

#: Largest frame a stream protocol accepts unless a handler says otherwise.
DEFAULT_MAX_FRAME_SIZE = 1024 * 1024


async def _read_some(stream: INetStream, n: int) -> bytes:
    """One read; b"" means end of stream (yamux raises StreamEOF, others may not)."""
    try:
        return await stream.read(n)
    except StreamEOF:
        return b""


class FramedStream:
    """A libp2p stream carrying unsigned-varint length-prefixed frames.

    The wire format is go-msgio's / ``libp2p.request_response``'s. We do not use
    ``libp2p.io.msgio.VarIntLengthMsgReadWriter`` because its reads go through
    ``libp2p.io.utils.read_exactly``, which cannot tell a clean end of stream
    between frames from a truncated frame (docs/LIBP2P.md §31), which a
    long-lived sync stream needs to distinguish.
    """

    def __init__(self, stream: INetStream, max_frame_size: int) -> None:
        self._stream = stream
        self.max_frame_size = max_frame_size
        self.peer_id: str = stream.muxed_conn.peer_id.to_base58()
        self.protocol: str = str(stream.get_protocol())
        self._buffer = bytearray()

    async def send(self, frame: bytes) -> None:
        """Send one frame; FrameTooLargeError if it exceeds ``max_frame_size``."""
        if len(frame) > self.max_frame_size:
            raise FrameTooLargeError(
                f"refusing to send a {len(frame)}-byte frame on {self.protocol}: "
                f"the limit is {self.max_frame_size} bytes"
            )
        try:
            await self._stream.write(encode_uvarint(len(frame)) + bytes(frame))
        except BaseLibp2pError as exc:
            raise StreamClosedError(f"cannot write to {self.peer_id} on {self.protocol}: {exc!r}") from exc

    async def _fill(self, n: int, *, at_boundary: bool) -> None:
        while len(self._buffer) < n:
            try:
                chunk = await _read_some(self._stream, max(n - len(self._buffer), 4096))
            except StreamReset as exc:
                raise StreamClosedError(f"{self.peer_id} reset the stream on {self.protocol}") from exc
            except BaseLibp2pError as exc:
                raise StreamClosedError(f"reading from {self.peer_id} on {self.protocol} failed: {exc!r}") from exc
            if not chunk:
                if at_boundary and not self._buffer:
                    raise EndOfStream(f"{self.peer_id} closed the stream on {self.protocol}")
                raise StreamClosedError(f"{self.peer_id} closed the stream in the middle of a frame on {self.protocol}")
            self._buffer += chunk

    async def receive(self) -> bytes:
        """Receive one frame.

        EndOfStream if the peer closed its side cleanly; FrameTooLargeError (and the
        stream is reset) if the announced length exceeds ``max_frame_size``.
        """
        length = 0
        for i in range(10):  # a uvarint of a 64-bit length has at most 10 bytes
            await self._fill(i + 1, at_boundary=(i == 0))
            byte = self._buffer[i]
            length |= (byte & 0x7F) << (7 * i)
            if not byte & 0x80:
                del self._buffer[: i + 1]
                break
        else:
            await self.reset()
            raise StreamClosedError(f"{self.peer_id} sent a malformed frame length on {self.protocol}")
        if length > self.max_frame_size:
            # Never buffer it: reset so the sender learns at once.
            await self.reset()
            raise FrameTooLargeError(
                f"{self.peer_id} sent a {length}-byte frame on {self.protocol}: "
                f"the limit is {self.max_frame_size} bytes; stream reset"
            )
        await self._fill(length, at_boundary=False)
        frame = bytes(self._buffer[:length])
        del self._buffer[:length]
        return frame

    def __aiter__(self) -> FramedStream:
        return self

    async def __anext__(self) -> bytes:
        try:
            return await self.receive()
        except EndOfStream:
            raise StopAsyncIteration from None

    async def close_write(self) -> None:
        """Half-close: tell the peer we will send no more frames (yamux FIN)."""
        try:
            await self._stream.close_write()
        except BaseLibp2pError as exc:
            log.debug("close_write on %s failed: %r", self.protocol, exc)

    async def aclose(self) -> None:
        """Close our side (the peer sees EndOfStream after the last frame)."""
        with trio.CancelScope(shield=True):
            try:
                await self._stream.close()
            except BaseLibp2pError as exc:
                log.debug("close on %s failed: %r", self.protocol, exc)

    async def reset(self) -> None:
        """Abort the stream in both directions."""
        with trio.CancelScope(shield=True):
            try:
                await self._stream.reset()
            except BaseLibp2pError as exc:
                log.debug("reset on %s failed: %r", self.protocol, exc)

    async def __aenter__(self) -> FramedStream:
        return self

    async def __aexit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            await self.aclose()
        else:
            await self.reset()


StreamHandler = Callable[[FramedStream], Awaitable[None]]
RequestHandler = Callable[[str, bytes], Awaitable[bytes]]


@dataclass(slots=True)
class HandlerEntry:
    """A served protocol: its handler, its frame limit, and who holds how many of its streams now.

    Two bounds: all peers together (what the node spends on the protocol), and each peer alone
    (so that no one peer can take every slot and lock the others out).
    """

    handler: StreamHandler
    max_frame_size: int
    max_concurrent: int
    max_per_peer: int
    open: dict[str, int] = field(default_factory=dict)  # peer -> streams it holds now
    total: int = 0

    def admit(self, peer: str) -> str | None:
        """Take a slot for ``peer``; None when admitted, else why not."""
        if self.total >= self.max_concurrent:
            return f"over {self.max_concurrent} concurrent streams"
        if self.open.get(peer, 0) >= self.max_per_peer:
            return f"over {self.max_per_peer} concurrent streams from one peer"
        self.total += 1
        self.open[peer] = self.open.get(peer, 0) + 1
        return None

    def release(self, peer: str) -> None:
        self.total -= 1
        left = self.open.get(peer, 1) - 1
        if left:
            self.open[peer] = left
        else:
            self.open.pop(peer, None)
