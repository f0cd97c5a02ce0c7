"""Whether a retelling can take an earlier correction in one step.

A race that ``retells`` (``race.RaceBase.retells``) feeds its whole log again at every
correction, stories told. Each earlier correction it meets on the way (a decision, an
official time for a skater who has a final, a restarting gun) puts the race where a
quiet replay of the log fed so far (:meth:`race.RaceBase._replay_log`) puts it. That
replay is needed only where the state differs from its result; elsewhere applying the
correction is the same, and a correction then costs one pass over the log, not one per
correction before it. :class:`Retelling` keeps what tells the two apart:

- before the first replay, the official finish times are not yet in place (a replay puts
  every official time of the whole log in place before the reads);
- a retelling skips every input the whole log voids, where a replay skips only those a
  void fed so far names: an input voided later, skipped already, would be applied;
- an input a replay applied is no longer applied once its void is fed.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from icetime.messages import Decision

from .model import RaceInput


def void_target(inp: RaceInput) -> str | None:
    """The input id a ``void`` decision names, else None."""
    if type(inp) is Decision and inp.action == "void":
        return str(inp.target)
    return None


@dataclass
class Retelling:
    """One retelling of a race: what it skips, and whether its state is the one a quiet
    replay of the log fed so far gives (:attr:`as_replayed`)."""

    #: The inputs the whole log voids: the retelling skips them.
    voided: set[str]
    #: The state is the replay's, but for the inputs in ``skipped``.
    exact: bool
    #: Inputs a void fed so far names.
    seen: set[str] = field(default_factory=set)
    #: Inputs skipped whose void is not fed yet: a replay now would apply them.
    skipped: set[str] = field(default_factory=set)
    #: Inputs the last replay applied whose void is not fed yet.
    applied: set[str] = field(default_factory=set)

    @property
    def as_replayed(self) -> bool:
        """Whether a quiet replay of the log fed so far would give the state as it is."""
        return self.exact and not self.skipped

    def met(self, input_id: str, inp: RaceInput) -> None:
        """The retelling has appended ``inp`` (id ``input_id``) to the log fed so far."""
        target = void_target(inp)
        if target is not None:
            self.seen.add(target)
            self.skipped.discard(target)
            if target in self.applied:
                self.applied.discard(target)
                self.exact = False  # applied by the replay: only a replay takes it out
        if input_id in self.voided and input_id not in self.seen:
            self.skipped.add(input_id)

    def replayed(self, ids: list[str], targets: set[str]) -> None:
        """The state is now a quiet replay's of the log fed so far (input ``ids``, and
        the ``targets`` its voids name)."""
        self.exact = True
        self.seen = set(targets)
        self.skipped = set()
        self.applied = {i for i in ids if i in self.voided and i not in targets}
