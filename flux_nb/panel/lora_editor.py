"""The LoRA list editor: rows of path + scale, added and removed by the user."""

from __future__ import annotations

from typing import Any, Callable, Iterable

import ipywidgets as widgets

from ..params import LIMITS, LoraWeight

__all__ = ["LoraEditor", "LoraRow"]


class LoraRow(widgets.HBox):
    """One LoRA: a path ``Text`` (URL, local file or Hugging Face repo id), a scale and a remove button."""

    def __init__(self, path: str = "", scale: float = 1.0):
        lo, hi = LIMITS["lora_scale"]
        self.path = widgets.Text(value=path, placeholder="URL, local .safetensors file or HF repo id",
                                 layout=widgets.Layout(flex="1 1 auto", width="auto"))
        self.path.add_class("flux-nb-lora-path")
        self.scale = widgets.BoundedFloatText(value=scale, min=lo, max=hi, step=0.05,
                                              description="scale", layout=widgets.Layout(width="150px"))
        self.scale.style.description_width = "40px"
        self.scale.add_class("flux-nb-lora-scale")
        self.remove_button = widgets.Button(icon="times", tooltip="Remove this LoRA",
                                            layout=widgets.Layout(width="36px"))
        self.remove_button.add_class("flux-nb-lora-remove")
        super().__init__([self.path, self.scale, self.remove_button])
        self.add_class("flux-nb-lora-row")

    def close(self) -> None:
        """Close the row and its controls (a closed box leaves its children's comms open)."""
        for child in (self.path, self.scale, self.remove_button):
            child.close()
        super().close()


class LoraEditor(widgets.VBox):
    """Add/remove rows of LoRA path + scale. ``rows`` lists the :class:`LoraRow` widgets in order.

    ``value()`` gives the LoRAs as ``[{"path", "scale"}]``; rows with an empty path are left out,
    so an added-but-unfilled row never blocks a generation.
    """

    def __init__(self, loras: Iterable[LoraWeight] = (), on_change: Callable[[], None] | None = None):
        self._on_change = on_change
        self.rows: list[LoraRow] = []
        self.add_button = widgets.Button(description="Add LoRA", icon="plus",
                                         layout=widgets.Layout(width="auto"))
        self.add_button.add_class("flux-nb-lora-add")
        self.add_button.on_click(lambda _b: self.add())
        super().__init__([self.add_button], layout=widgets.Layout(align_items="flex-start"))
        self.add_class("flux-nb-loras")
        self.set(loras)

    def add(self, path: str = "", scale: float = 1.0) -> LoraRow:
        """Append a row and return it."""
        row = self._make_row(path, scale)
        self.rows.append(row)
        self._refresh()
        return row

    def remove(self, row: LoraRow | int) -> None:
        """Remove a row (the widget or its index)."""
        if isinstance(row, int):
            row = self.rows[row]
        self.rows.remove(row)
        self._refresh()
        row.close()

    def set(self, loras: Iterable[LoraWeight | dict]) -> None:
        """Replace every row with ``loras``."""
        for row in list(self.rows):
            row.close()
        self.rows = []
        for lora in loras:
            path, scale = (lora.path, lora.scale) if isinstance(lora, LoraWeight) else (lora["path"], lora.get("scale", 1.0))
            self.rows.append(self._make_row(path, scale))
        self._refresh()

    def value(self) -> list[dict]:
        """The filled rows as fal's ``loras`` list."""
        return [{"path": row.path.value.strip(), "scale": row.scale.value} for row in self.rows if row.path.value.strip()]

    def _make_row(self, path: str, scale: float) -> LoraRow:
        row = LoraRow(path, scale)
        row.remove_button.on_click(lambda _b, row=row: self.remove(row))
        row.path.observe(self._changed, "value")
        row.scale.observe(self._changed, "value")
        return row

    def _changed(self, _change: Any = None) -> None:
        if self._on_change is not None:
            self._on_change()

    def _refresh(self) -> None:
        self.children = [*self.rows, self.add_button]
        self._changed()
