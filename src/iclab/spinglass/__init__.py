"""A linear-attention transformer as a spin glass (Li, Bai, Huang 2024, arXiv 2408.02288).

Axis vocabulary: P prompts (task diversity), N examples per prompt, D input
dimension, K = D (D + 1) active spins (entries of the merged attention matrix
W in R^((D+1) x (D+1)) that can affect the prediction).

Flow: :mod:`data` (prompts Z and their statistics s) -> :mod:`hamiltonian`
(couplings J, fields h, self-couplings lambda) -> :mod:`boltzmann` (exact
Gaussian measure, AMP, Langevin) -> :mod:`order` (magnetisations, contrast
ratio, zero modes, test error); :mod:`training` trains the same model by
gradient descent for comparison.
"""

from iclab.spinglass.boltzmann import AMPResult, GaussianMeasure, amp, amp_paper, amp_reference_loop, exact_measure, langevin
from iclab.spinglass.data import Prompts, linear_attention, predict, sample_prompts, statistics
from iclab.spinglass.hamiltonian import SpinGlass, energy, matrix_to_spins, spin_glass, spins_to_matrix
from iclab.spinglass.order import contrast_ratio, min_norm_solution, generalization_error, zero_mode_fraction
from iclab.spinglass.training import train_linear_attention

__all__ = [
    "AMPResult",
    "GaussianMeasure",
    "Prompts",
    "SpinGlass",
    "amp",
    "amp_paper",
    "amp_reference_loop",
    "contrast_ratio",
    "energy",
    "exact_measure",
    "langevin",
    "linear_attention",
    "matrix_to_spins",
    "min_norm_solution",
    "predict",
    "sample_prompts",
    "spin_glass",
    "spins_to_matrix",
    "statistics",
    "generalization_error",
    "train_linear_attention",
    "zero_mode_fraction",
]
