"""difftre: Differentiable Trajectory Reweighting.

Numba kernels (``difftre.kernels``) make trajectories; JAX energy models
(``difftre.models``) and observables (``difftre.observables``) give the loss
and its gradient by reweighting (Thaler & Zavadlav, Nat. Commun. 12, 6884 (2021)).
"""

__version__ = "0.1.0"
