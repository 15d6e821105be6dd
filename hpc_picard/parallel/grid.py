"""The time x sample process grid.

P ranks form P / P_t sample groups of P_t consecutive ranks. Inside a group the ranks
split the time slices of each block (the time communicator); ranks with the same
position in their groups form the sample communicator, used to collect results.

Convergence verdicts (when a block's sweeps stop, where ParaDiGMS' window slides) are
reduced over the verdict communicator, which spans every group: all groups then run
the same sweeps and the samples do not depend on how the ranks are split. It is the
world communicator when there are several groups, else the time communicator itself.
"""
from __future__ import annotations

from dataclasses import dataclass

from .comm import Communicator
from .decomposition import balanced_range


@dataclass
class ProcessGrid:
    world: Communicator
    time: Communicator      # the ranks of this sample group
    samples: Communicator   # same time rank, one per sample group
    verdicts: Communicator  # every rank whose sweeps must agree (all groups)
    group: int              # this rank's sample group
    num_groups: int

    @classmethod
    def build(cls, world: Communicator, time_ranks: int) -> "ProcessGrid":
        if time_ranks < 1 or world.size % time_ranks:
            raise ValueError(
                f"--time-ranks {time_ranks} must divide the number of ranks ({world.size})")
        group, position = divmod(world.rank, time_ranks)
        time = world.split(group, position)
        return cls(world=world,
                   time=time,
                   samples=world.split(position, group),
                   verdicts=world if world.size > time_ranks else time,
                   group=group, num_groups=world.size // time_ranks)

    def sample_range(self, num_samples: int) -> tuple:
        """[start, stop) of the global sample indices this rank's group owns."""
        return balanced_range(num_samples, self.num_groups, self.group)

    def comm_seconds(self) -> float:
        # the verdict communicator is the world or the time communicator: counted there
        return self.time.comm_seconds + self.samples.comm_seconds + self.world.comm_seconds

    def free(self):
        """Release the split communicators (collective over the world)."""
        self.time.free()
        self.samples.free()
