"""The exception classes of the voting protocol library (one base class for callers)."""
from __future__ import annotations


class VotingError(ValueError):
    """Base class: bad input to, or a failed step of, the voting protocol."""


class RevealError(VotingError):
    """A reveal (or signed reveal) that is malformed, badly signed or does not match its commit."""


class VoteError(VotingError):
    """A vote payload that does not verify or parse as a voting document."""


class SharedRandomError(VotingError):
    """The shared random value cannot be computed (no votes for the epoch)."""


class TallyError(VotingError):
    """The votes do not produce a consensus (too few votes, a partition, no parameter winner)."""


class TopologyError(VotingError):
    """The mixes cannot be laid out (previous document with more layers than configured)."""


class ConsensusError(VotingError):
    """A consensus certificate that cannot be built, combined, or accepted."""
