"""The one exception hierarchy of swapmeet.

Every rejection of input says *what* is wrong and *where*: ``InvalidObject``
carries a field path such as ``listing.body.have[0].qty`` so the CLI can show a
single line ("listing.body.have[0].qty: must be a positive integer, got -1")
instead of a traceback.
"""

from __future__ import annotations


class SwapmeetError(Exception):
    """Base of every error swapmeet raises on purpose. The CLI prints ``str(err)``."""


class InvalidObject(SwapmeetError):
    """Bytes or a value that failed the trust boundary: encoding, schema, rule or signature.

    ``path`` names the offending field (dotted, with ``[i]`` for list items);
    ``reason`` says what is wrong with it. ``code`` is a stable machine-readable
    name for the rule that was broken (used by the test vectors).
    """

    def __init__(self, path: str, reason: str, code: str = "invalid") -> None:
        self.path = path
        self.reason = reason
        self.code = code
        super().__init__(f"{path}: {reason}" if path else reason)

    def under(self, prefix: str) -> InvalidObject:
        """The same error for a value found at ``prefix`` (e.g. ``listings[3]``) of a larger input."""
        return InvalidObject(f"{prefix}.{self.path}" if self.path else prefix, self.reason, self.code)


class KeyFileError(SwapmeetError):
    """The identity key file is missing, damaged, or the passphrase is wrong."""
