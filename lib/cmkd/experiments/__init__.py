"""One module per notebook: pure functions from a Config to tidy pandas DataFrames.

``NOTEBOOKS`` maps each notebook's file stem to the module that backs it; ``cmkd reproduce``
uses it to validate params files before any compute.
"""

from __future__ import annotations

import importlib

NOTEBOOKS = {
    "01_mvd_synthetic_sweeps": "cmkd.experiments.mvd_sweeps",
    "02_modality_general_teacher": "cmkd.experiments.modality_general",
    "03_theorem_4_1": "cmkd.experiments.theorem41",
    "04_case_studies": "cmkd.experiments.case_studies",
    "05_feature_ranking": "cmkd.experiments.feature_ranking",
    "06_c2kd": "cmkd.experiments.c2kd_benchmark",
    "07_diagnostics": "cmkd.experiments.diagnostics",
    "08_gamma_meets_c2kd": "cmkd.experiments.gamma_c2kd",
    "09_diagnostic_validation": "cmkd.experiments.diagnostic_validation",
    "10_rgbd_segmentation": "cmkd.experiments.rgbd_segmentation",
}


def module_for(notebook: str):
    """The experiment module behind a notebook stem (for example '01_mvd_synthetic_sweeps')."""
    try:
        return importlib.import_module(NOTEBOOKS[notebook])
    except KeyError:
        raise KeyError(f"no experiment module is registered for notebook {notebook!r}; "
                       f"known: {', '.join(NOTEBOOKS)}") from None
