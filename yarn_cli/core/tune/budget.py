"""tune's --budget: a candidate starts only when it would end within the budget.

A candidate's time is predicted from those measured so far (their mean), and before the first one from the
unextended reference's pass scaled to a candidate's length. The clock is the caller's: this module only decides.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Budget:
    seconds: float | None  # None: no budget
    started: float  # the caller's clock when tuning started
    estimate: float = 0.0  # a candidate's time before any was measured
    timed: list[float] = field(default_factory=list)  # each measured candidate's seconds
    stopped: bool = False

    def next_candidate(self) -> float:
        return sum(self.timed) / len(self.timed) if self.timed else self.estimate

    def over(self, now: float) -> bool:
        """Whether the next candidate would end past the budget; once over, it stays over."""
        if self.seconds is not None and not self.stopped:
            self.stopped = now - self.started + self.next_candidate() > self.seconds
        return self.stopped

    def plan(self, reference_seconds: float, reference_tokens: int, candidate_tokens: int, now: float, candidates: int) -> str | None:
        """Set the estimate from the reference's pass; the line that tells the user what the budget holds (None
        without a budget). ``candidates``: the most the search would measure."""
        self.estimate = reference_seconds * candidate_tokens / max(reference_tokens, 1)
        if self.seconds is None:
            return None
        left = self.seconds - (now - self.started)
        fits = max(int(left // self.estimate), 0) if self.estimate > 0 else candidates
        head = f"--budget {self.seconds / 60:g} min: a candidate takes about {self.estimate:.0f} s, so about {fits}"
        if fits >= 2:
            return f"{head} of up to {candidates} fit"
        beyond = (2 - fits) * self.estimate
        return f"{head} fit; the paper's m and m = 1.0 are measured whatever the budget (about {beyond:.0f} s beyond it)"
