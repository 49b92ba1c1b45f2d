"""Hooks that feed a model layer's output through an SAE into a `Recorder` (the monitor)."""

from .model_hook import MonitorHook
from .recorder import Recorder

__all__ = ["MonitorHook", "Recorder"]
