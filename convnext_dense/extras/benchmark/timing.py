"""Wall-clock timing that stays fair on a shared, noisy machine.

Cases that are compared run interleaved in one process (ours, peer, ours, peer, ...), the order
flips every round so slow drifts hit both sides alike, and each side is summarised by its median;
:func:`per_round_ratios` compares two sides round by round.
"""
import os
import statistics
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Mapping, Optional, Tuple

from ...model.archs import is_int


@dataclass
class Timing:
    """Seconds per call of one case.

    Attributes:
        times: Every timed call, in order.
    """

    times: List[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        """Median seconds per call."""
        return statistics.median(self.times)

    @property
    def best(self) -> float:
        """Fastest call."""
        return min(self.times)

    @property
    def spread(self) -> Optional[float]:
        """Interquartile range over the median; None under 4 calls, where quartiles say nothing."""
        if len(self.times) < 4:
            return None
        quartiles = statistics.quantiles(self.times, n=4)
        return (quartiles[2] - quartiles[0]) / self.median


# Wall time, or this process's CPU time (all its threads; not inflated by other processes).
CLOCKS = {'wall': time.perf_counter, 'cpu': time.process_time}


def time_interleaved(cases: Mapping[str, Callable[[], object]], repeats: int, warmup: int = 1,
                     sync: Optional[Callable[[], None]] = None,
                     clock: Callable[[], float] = time.perf_counter) -> Dict[str, Timing]:
    """Time each case ``repeats`` times, round-robin, after ``warmup`` untimed calls each.

    Args:
        cases: Name -> a zero-argument callable running one step.
        repeats: Timed calls per case (at least 1).
        warmup: Untimed calls per case first (allocator, oneDNN primitive caches, compilation).
        sync: Called before reading the clock (``torch.cuda.synchronize`` on a GPU).
        clock: Seconds counter (:data:`CLOCKS`).

    Raises:
        ValueError: ``repeats`` < 1, ``warmup`` < 0 or no cases.
    """
    if not cases:
        raise ValueError('time_interleaved needs at least one case')
    if not is_int(repeats) or repeats < 1:
        raise ValueError(f'repeats must be a positive int, got {repeats!r}')
    if not is_int(warmup) or warmup < 0:
        raise ValueError(f'warmup must be an int >= 0, got {warmup!r}')
    sync = sync or (lambda: None)
    names = list(cases)
    for name in names:
        for _ in range(warmup):
            cases[name]()
    sync()
    timings = {name: Timing() for name in names}
    for round_index in range(repeats):
        for name in (names if round_index % 2 == 0 else reversed(names)):
            start = clock()
            cases[name]()
            sync()
            timings[name].times.append(clock() - start)
    return timings


def per_round_ratios(numerator: Timing, denominator: Timing) -> Timing:
    """``numerator``'s time over ``denominator``'s in each round of one :func:`time_interleaved`
    run (its ``median`` and ``spread`` summarise them).

    The two calls of a round ran back to back, so a slowdown of the machine that lasts longer
    than a round cancels in their ratio, where it widens each side's own spread.

    Raises:
        ValueError: the two were timed over different numbers of rounds.
    """
    if len(numerator.times) != len(denominator.times):
        raise ValueError(f'cannot pair {len(numerator.times)} rounds with '
                         f'{len(denominator.times)}: time both in one time_interleaved run')
    return Timing([a / b for a, b in zip(numerator.times, denominator.times)])


def format_spread(spread: Optional[float]) -> str:
    """:attr:`Timing.spread` as a percentage, or ``n/a`` when too few calls were timed."""
    return 'n/a' if spread is None else f'{spread:.1%}'


def load_average() -> Tuple[float, float, float]:
    """1, 5 and 15 minute load averages (zeros where the platform has none)."""
    try:
        return os.getloadavg()
    except (AttributeError, OSError):
        return (0.0, 0.0, 0.0)
