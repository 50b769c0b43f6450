"""The ipywidgets control panel: ``flux_nb.Panel()``.

Modules: :mod:`.widget` (the panel), :mod:`.lora_editor` (LoRA rows), :mod:`.gallery` (output grid
and history strip), :mod:`.sweep_tab` (the Sweep tab), :mod:`.worker` (background job queue) and
:mod:`.code` (pure helpers: messages, copy-as-code, cost).
"""

from .gallery import PanelHistoryEntry
from .widget import Panel

#: The former name of :class:`PanelHistoryEntry`, kept so existing code keeps working.
HistoryEntry = PanelHistoryEntry

__all__ = ["Panel", "PanelHistoryEntry", "HistoryEntry"]
