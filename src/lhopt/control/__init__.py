"""Control of the inner optimizer: the discrete action space and the restart registers."""

from lhopt.control.actions import OFFICIAL_HEADS, REGISTER_OPS, ActionSpace, Head
from lhopt.control.registers import RestartRegisters, Snapshot

__all__ = ["OFFICIAL_HEADS", "REGISTER_OPS", "ActionSpace", "Head", "RestartRegisters", "Snapshot"]
