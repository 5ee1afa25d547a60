"""Hydra's basic sweeper launching the most expensive cells first (order and cost: study/launch_order.py)."""

from __future__ import annotations

from collections.abc import Sequence

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

from study.launch_order import checks_every_cell, order_cells


class CostOrderedSweeper(BasicSweeper):
    """BasicSweeper whose job batches are launched most expensive first (see module doc)."""

    def __init__(self, max_batch_size: int | None = None, params: dict | None = None, order: str = "cost"):
        super().__init__(max_batch_size=max_batch_size, params=params)
        order_cells([], order)  # an unknown order fails here, naming the valid ones
        self.order = order

    def sweep(self, arguments: list[str]):
        """The basic sweep, with Ctrl-C, SIGTERM and SIGHUP ending every run of the sweep still
        RUNNING KILLED (study/stops.py); a cell that trains in this process handles them itself."""
        from study import stops

        with stops.watching():
            try:
                return super().sweep(arguments)
            except KeyboardInterrupt:
                from study.sweep import stopped

                stopped(self.config)

    def get_job_batch(self) -> Sequence[Sequence[str]]:
        return order_cells(super().get_job_batch(), self.order)

    def validate_batch_is_legal(self, batch: Sequence[Sequence[str]]) -> None:
        """Hydra composes every cell of a batch again before launching it (0.17 s a cell, on top of
        the launcher's own composition). The sweep callback has already composed and checked every
        cell before the parent run; without it, Hydra's check."""
        if not checks_every_cell(self.config):
            super().validate_batch_is_legal(batch)
