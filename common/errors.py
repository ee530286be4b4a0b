"""The one error family that common/ raises."""


class ProtocolError(Exception):
    """Bytes or a request that break the protocol: malformed, undecryptable,
    replayed, oversize, or against a rule. The message is written for a person.

    A server that catches it drops the one peer that caused it; a client shows it.
    """
