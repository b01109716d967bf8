"""Few-shot add-k, head by head (Hu et al. 2025), on any :class:`~iclab.heads.HeadModel`.

- :mod:`.prompts`: prompts in the task's formats, batched by length; task means of every head's z; exact-match accuracy.
- :mod:`.heads`: function vectors, the sparse head mask, single-head sufficiency, main heads, ablations (section 3).
- :mod:`.subspaces`: task-mean PCA and periodic features, the aggregation / extraction identity and its signals, the
  projection causal test (sections 4-5, appendix F).
- :mod:`.task_vectors`: task vectors by layer (Hendel et al. 2023): the mean final-token residual of k's few-shot
  prompts in place of a zero-shot prompt's, zero-shot accuracy by layer.
- :mod:`.planted`: a hand-set model whose mechanism is known (the pipeline's known-answer test).
- :mod:`.pipeline`: the study's steps on these, each returning a typed result (localisation, subspaces, projection).

The building blocks are re-exported here (``from iclab.analysis import addk as A; A.correct(...)``).
"""

from iclab.analysis.addk.heads import (
                                       HeadTest,
                                       MainHeadRule,
                                       MaskFit,
                                       RecoveryScan,
                                       ablate_only,
                                       benjamini_hochberg,
                                       function_vectors,
                                       fv_injection,
                                       fv_intervention,
                                       heads_mask,
                                       largest_gap_set,
                                       mcnemar_one_sided,
                                       mean_ablation,
                                       optimise_mask,
                                       paired_significance,
                                       recovery_scan,
                                       task_results,
                                       unified_main_heads,
)
from iclab.analysis.addk.prompts import (
                                       ARROW,
                                       Prompt,
                                       correct,
                                       encode_prompt,
                                       groups,
                                       make_prompts,
                                       other_task_pairs,
                                       task_mean_z,
                                       wrong_label_prompts,
)
from iclab.analysis.addk.subspaces import (
                                       MAGNITUDE_TARGETS,
                                       PERIODIC,
                                       PROJECTION_SUBSPACES,
                                       UNIT_TARGETS,
                                       Extraction,
                                       FeatureFit,
                                       HeadPCA,
                                       MeanCI,
                                       ModFit,
                                       PeriodicFeature,
                                       SignalRouting,
                                       WrongDemonstration,
                                       extraction,
                                       head_pca,
                                       mod_vector_fit,
                                       periodic_fit,
                                       projected_fv,
                                       projection_basis,
                                       signal_routing,
                                       successive_correlation,
                                       wrong_demonstration,
)
from iclab.analysis.addk.task_vectors import TaskVectorCurve, final_residuals, patched_accuracy, task_vector_curve

__all__ = ["ARROW", "MAGNITUDE_TARGETS", "PERIODIC", "PROJECTION_SUBSPACES", "UNIT_TARGETS", "Extraction", "FeatureFit", "HeadPCA",
           "HeadTest", "MainHeadRule", "MaskFit", "MeanCI", "ModFit", "PeriodicFeature", "Prompt", "RecoveryScan", "SignalRouting",
           "TaskVectorCurve", "WrongDemonstration", "ablate_only", "benjamini_hochberg", "correct", "encode_prompt", "extraction", "final_residuals", "function_vectors",
           "fv_injection", "fv_intervention", "groups", "head_pca", "heads_mask", "largest_gap_set", "make_prompts", "mcnemar_one_sided",
           "mean_ablation", "mod_vector_fit", "optimise_mask", "other_task_pairs", "paired_significance", "patched_accuracy", "periodic_fit", "projected_fv",
           "projection_basis", "recovery_scan", "signal_routing", "successive_correlation", "task_mean_z", "task_vector_curve", "task_results",
           "unified_main_heads", "wrong_demonstration", "wrong_label_prompts"]
