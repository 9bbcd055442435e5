"""Workflows: what runs several analyses, one layer above them (docs/ARCHITECTURE.md).

The main job (:mod:`.pipeline`, ``tlens-icl run``); the six-method comparison on held-out items
(:mod:`.compare`, ``compare_methods``); heads over training checkpoints (:mod:`.dynamics`, ``head_dynamics``);
the cross-model study - run the papers' measurements on one model (:mod:`.run`), summarise stored studies and
put several models beside the papers (:mod:`.summary`), ``tlens-icl study MODEL --out DIR``; and ICL as it forms
over training seeds of ``icl-forming`` (:mod:`.forming`), ``tlens-icl forming --out DIR``."""

from tlens_icl.workflows.forming import forming_study, load_forming, load_indexes, seed_table, seeds_figure
from tlens_icl.workflows.run import PAPER, REDUCED, SIZES, SMOKE, StudySizes, first_argmax, load_study, run_study
from tlens_icl.workflows.summary import (
    FINDINGS,
    cross_model_figures,
    cross_model_table,
    provenance_markdown,
    study_summary,
    table_markdown,
    write_study_report,
)

__all__ = ["FINDINGS", "forming_study", "load_forming", "load_indexes", "seed_table", "seeds_figure", "PAPER", "cross_model_figures", "write_study_report", "REDUCED", "SIZES", "SMOKE", "StudySizes", "cross_model_table", "first_argmax",
           "load_study", "provenance_markdown", "run_study", "study_summary", "table_markdown"]
