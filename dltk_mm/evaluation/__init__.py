"""dltk_mm.evaluation: per-organ Dice, HD95 and ASSD of predictions against reference labels."""

from dltk_mm.evaluation.evaluate import (
    ALL_ORGANS,
    PREDICTION_SUFFIX,
    RESULT_COLUMNS,
    EvaluationPair,
    evaluate_pairs,
    format_summary_table,
    input_files,
    pairs_from_folders,
    pairs_from_manifest,
    prediction_path,
    summarise,
)

__all__ = [
    "ALL_ORGANS",
    "PREDICTION_SUFFIX",
    "RESULT_COLUMNS",
    "EvaluationPair",
    "evaluate_pairs",
    "format_summary_table",
    "input_files",
    "pairs_from_folders",
    "pairs_from_manifest",
    "prediction_path",
    "summarise",
]
