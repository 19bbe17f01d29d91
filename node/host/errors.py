"""The errors the host raises: everything above the host catches these, never a libp2p exception."""

from __future__ import annotations


class P2PError(Exception):
    """Base class of the errors this module raises."""


class DialError(P2PError):
    """A peer could not be dialled."""


class P2PTimeoutError(P2PError, TimeoutError):
    """A network operation did not finish in time."""


class FrameTooLargeError(P2PError):
    """A frame (or gossip payload) exceeds the configured maximum size."""


class StreamClosedError(P2PError):
    """The stream was reset by the peer, or ended in the middle of a frame."""


class EndOfStream(P2PError):
    """The peer closed its side of the stream cleanly, between two frames."""


class ProtocolNotSupportedError(P2PError):
    """The peer does not speak the requested stream protocol."""


class PublishRejectedError(P2PError):
    """Our own validator rejected a message we tried to publish."""


class RequestRefused(P2PError):
    """A request handler refuses what the peer sent (bad input, not a bug of ours).

    Raised by handlers; the stream is reset and one line is logged at info, without
    the traceback an unexpected handler error gets.
    """
