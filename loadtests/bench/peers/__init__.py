"""The peers the benchmark measures replaybus against, in the same run and with the same load
generator: Nchan (nginx module, Redis storage) over EventSource and Faye (Node, faye-redis
engine) over Bayeux long-polling. See README.md beside this file for configurations, versions
and the exact request shapes."""

from loadtests.bench.peers.faye import FayePeer, running_faye
from loadtests.bench.peers.nchan import NchanPeer, running_nchan

__all__ = ["FayePeer", "NchanPeer", "running_faye", "running_nchan"]
