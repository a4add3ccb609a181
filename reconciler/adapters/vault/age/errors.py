"""The one exception type of the age package, with one subclass per failure stage.

A decryptor goes through the stages in this order: armor -> header (parse, then unwrap) ->
no_match (no identity opened any stanza) -> hmac (header MAC) -> payload (STREAM). The stage
names the first one that failed, so a header that does not parse is never reported as a MAC
failure. Messages describe *what* was wrong and never carry plaintext, file keys, secret keys
or passphrases.
"""

from __future__ import annotations

from typing import Literal

Stage = Literal["armor", "header", "no_match", "hmac", "payload"]


class AgeError(Exception):
    """An age file (or key) could not be used. `.stage` says which step failed.

    Key and recipient parsing errors, and refusals while building a header for encryption,
    use stage "header": they are problems with the input that describes the header.
    """

    stage: Stage = "header"

    def __init__(self, message: str, stage: Stage | None = None):
        super().__init__(message)
        if stage is not None:
            self.stage = stage

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.args[0]!r}, stage={self.stage!r})"


class ArmorError(AgeError):
    """The ASCII armor (PEM `AGE ENCRYPTED FILE`) is not strictly well formed."""

    stage: Stage = "armor"


class HeaderError(AgeError):
    """The header does not parse, a known stanza is malformed, or a structural rule fails."""

    stage: Stage = "header"


class NoMatchError(AgeError):
    """The header is fine but none of the offered identities opens any stanza."""

    stage: Stage = "no_match"


class HMACError(AgeError):
    """The file key was unwrapped but the header MAC does not match: the header was altered."""

    stage: Stage = "hmac"


class PayloadError(AgeError):
    """The encrypted payload is truncated, altered, or has data after its final chunk."""

    stage: Stage = "payload"
