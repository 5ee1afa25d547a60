"""Report sections, one module per preset family, each registering its presets' sections (figures,
captions, tables) with `@register`: `grid` (the generic report: grid, smoke, paper and any preset
without its own), `grid_pilot`, `reference` (grid_reference), `optimization` (gd_variants,
lr_schedules, optimizers_tuned), `architecture` (init, regularization, mitigations, width),
`reproductions` (glorot_bengio_2010, he_2015, he_2015_width), `he_fig2`
(he_2015_fig2), `signal_propagation`, `second_order` (second_order,
edge_of_stability). A new family is a module here and a line below.
"""

from study.report.sections import (  # noqa: F401  (each module registers its sections)
    architecture,
    grid,
    grid_pilot,
    he_fig2,
    optimization,
    reference,
    reproductions,
    second_order,
    signal_propagation,
)
from study.report.sections.registry import (
    SECTIONS,
    Figure,
    Section,
    View,
    cells_table,
    question,
    register,
    section,
    verdict_counts,
)

__all__ = ["SECTIONS", "Figure", "Section", "View", "cells_table", "question", "register", "section", "verdict_counts"]
