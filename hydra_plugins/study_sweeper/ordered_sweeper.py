"""Hydra's basic sweeper launching the most expensive cells first (order and cost: study/sweeper.py)."""

from __future__ import annotations

from collections.abc import Sequence

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

from study.sweeper import order_cells


class CostOrderedSweeper(BasicSweeper):
    """BasicSweeper whose job batches are launched most expensive first (see module doc)."""

    def __init__(self, max_batch_size: int | None = None, params: dict | None = None, order: str = "cost"):
        super().__init__(max_batch_size=max_batch_size, params=params)
        order_cells([], order)  # an unknown order fails here, naming the valid ones
        self.order = order

    def get_job_batch(self) -> Sequence[Sequence[str]]:
        return order_cells(super().get_job_batch(), self.order)
