"""Who may use the bot and how much, decided without I/O: the access rules (`policy`) and the
fair-use limits (`fair_use`). The chat layer feeds them what the store knows and the time."""

from bot.access.fair_use import FairUse, Limits, Refusal
from bot.access.policy import REASONS, AccessMode, HoldOff, Reason, Rules, StrangerAnswer

__all__ = [
    "REASONS", "AccessMode", "FairUse", "HoldOff", "Limits", "Reason", "Refusal", "Rules",
    "StrangerAnswer",
]
