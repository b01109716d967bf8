"""Induction heads and the ICL phase change (Olsson et al. 2022).

- :mod:`.scores`: everything measured on one set of weights: the ICL score, per-head prefix-matching, previous-token
  and copying scores (``head_scores`` for any HeadModel; ``score_model`` per snapshot), induction heads.
- :mod:`.runs`: over a training run of iclab's models: the scored trajectory, ablations, one head's pattern, the
  per-token loss attribution.
- :mod:`.evidence`: on any HeadModel (a real LM included): per-token losses, in-context learning on text and on repeated
  tokens, ablations of the top heads against random heads of the same layers.
- :mod:`.phase_change`: the phase-change window, the loss bump, the per-token-loss PCA.
- :mod:`.loss_attribution`: which tokens gain across the phase change.
"""
