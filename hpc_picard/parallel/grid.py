"""The time x sample process grid.

P ranks form P / P_t sample groups of P_t consecutive ranks. Inside a group the ranks
split the time slices of each block (the time communicator); ranks with the same
position in their groups form the sample communicator, used to collect results. The
time communicator's max-reductions (convergence verdicts) span all groups, so every
group runs the same sweeps and the samples do not depend on the split.
"""
from __future__ import annotations

from dataclasses import dataclass

from .comm import Communicator, GroupCommunicator
from .decomposition import balanced_range


@dataclass
class ProcessGrid:
    world: Communicator
    time: Communicator      # the ranks of this sample group
    samples: Communicator   # same time rank, one per sample group
    group: int              # this rank's sample group
    num_groups: int

    @classmethod
    def build(cls, world: Communicator, time_ranks: int) -> "ProcessGrid":
        if time_ranks < 1 or world.size % time_ranks:
            raise ValueError(
                f"--time-ranks {time_ranks} must divide the number of ranks ({world.size})")
        group, position = divmod(world.rank, time_ranks)
        time = world.split(group, position)
        if world.size > time_ranks:
            # convergence verdicts over every group: samples independent of the split
            time = GroupCommunicator(time.comm, verdicts=world, cuda_aware=world.cuda_aware)
        return cls(world=world,
                   time=time,
                   samples=world.split(position, group),
                   group=group, num_groups=world.size // time_ranks)

    def sample_range(self, num_samples: int) -> tuple:
        """[start, stop) of the global sample indices this rank's group owns."""
        return balanced_range(num_samples, self.num_groups, self.group)

    def comm_seconds(self) -> float:
        return self.time.comm_seconds + self.samples.comm_seconds + self.world.comm_seconds
