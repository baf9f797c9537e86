"""The voting round's deadlines (v0.0.15 of the 2021 Katzenpost voting authority).

All offsets are within epoch E-1, in which the document for E is made: the descriptor cut-off
and vote at P/2, the reveal at 5P/8, the tabulation and signature at 3P/4, the combination and
publication at 7P/8. For the reference period (1200 s) and its warped one (120 s) each is a
whole second after the epoch start.
"""
from __future__ import annotations

import enum

from katzenpost.pki.epochtime import EpochClock


class Phase(enum.Enum):
    """The state names the reference logs."""
    BOOTSTRAP = "bootstrap"
    ACCEPT_DESC = "accept_desc"
    ACCEPT_VOTE = "accept_vote"
    ACCEPT_REVEAL = "accept_reveal"
    ACCEPT_SIGNATURE = "accept_signature"


class Schedule:
    """Deadlines as seconds from the epoch start, for the clock's period."""

    def __init__(self, clock: EpochClock) -> None:
        self.clock = clock
        period = clock.period
        self.vote = period / 2          # mixPublishDeadline: descriptor cut-off, Vote #1
        self.reveal = 5 * period / 8    # authorityVoteDeadline: Reveal
        self.tabulate = 3 * period / 4  # authorityRevealDeadline: tally, sign, Vote #2
        self.publish = 7 * period / 8   # publishConsensusDeadline: combine signatures

    def offset(self, phase: Phase) -> float:
        """The deadline at which a machine in `phase` next wakes (0 = the epoch start)."""
        return {Phase.BOOTSTRAP: 0.0, Phase.ACCEPT_DESC: self.vote,
                Phase.ACCEPT_VOTE: self.reveal, Phase.ACCEPT_REVEAL: self.tabulate,
                Phase.ACCEPT_SIGNATURE: self.publish}[phase]

    def at(self, epoch: int, phase: Phase) -> float:
        """Unix time of `phase`'s deadline within `epoch`."""
        return self.clock.epoch_start(epoch) + self.offset(phase)
