"""Standard errors of (re)weighted averages over a correlated trajectory, by block averaging.

A reweighted average over N stored states, <O>_w = sum_i w_i O_i / sum_i w_i
(DiffTRe's weights sum to 1), is a ratio of two sums. The states are split into
B consecutive blocks b (sizes differ by at most one state), with block sums
A_b = sum_{i in b} w_i O_i and W_b = sum_{i in b} w_i. For blocks longer than
the correlation time the (A_b, W_b) are nearly independent, and the delta
method for the ratio gives

  SE^2 = B / (B - 1) * sum_b (A_b - <O>_w W_b)^2 / (sum_b W_b)^2.

With uniform weights and equal blocks this is the textbook blocking estimator
std(block means, ddof=1)^2 / B. A nonlinear function of several averages (a
variance, the fluctuation term of the elastic stiffness) gets its error from
the delete-one-block jackknife (``block_jackknife``).

Block count: ``optimal_block_count`` follows Flyvbjerg & Petersen (J. Chem.
Phys. 91, 461 (1989)): the SE as a function of the block length L = 1, 2, 4, ...
(``blocking_curve``) rises while L is shorter than the correlation time and
then levels off. The plateau is picked with the rule of Lee et al. (Phys. Rev.
E 83, 066706 (2011)): the smallest L with L^3 > 2 N (SE_L / SE_1)^4, i.e. where
the blocking bias, about s / L for the statistical inefficiency
s = (SE_L / SE_1)^2, has fallen below the estimate's own relative statistical
error, about sqrt(L / (2 N)). Everything is NumPy float64.
"""
import warnings

import numpy as np

MIN_BLOCKS = 16   # fewest blocks the automatic choice uses: the SE's own relative error is ~ 1 / sqrt(2 (B - 1))


def _states_and_weights(values, weights):
    """values as float64 (N, ...) with N >= 2; weights as float64 (N,) (ones if None), checked."""
    values = np.asarray(values, dtype=np.float64)
    if values.ndim == 0 or values.shape[0] < 2:
        raise ValueError(f"values need a leading state axis of length >= 2, got shape {values.shape}")
    n = values.shape[0]
    if weights is None:
        return values, np.ones(n)
    weights = np.asarray(weights, dtype=np.float64)
    if weights.shape != (n,):
        raise ValueError(f"weights must have shape ({n},) (one per state), got {weights.shape}")
    if not np.all(np.isfinite(weights)) or np.any(weights < 0) or not weights.sum() > 0:
        raise ValueError("weights must be finite, non-negative and not all zero")
    return values, weights


def _block_sums(values, weights, n_blocks):
    """(A_b (B, ...), W_b (B,)): weighted sums of values and weights over B consecutive blocks."""
    n = values.shape[0]
    if not 2 <= n_blocks <= n:
        raise ValueError(f"n_blocks must be in [2, {n}] for {n} states, got {n_blocks}")
    sizes = np.full(n_blocks, n // n_blocks)
    sizes[:n % n_blocks] += 1
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    weighted = weights.reshape((n,) + (1,) * (values.ndim - 1)) * values
    return np.add.reduceat(weighted, starts, axis=0), np.add.reduceat(weights, starts)


def _ratio_standard_error(block_values, block_weights):
    n_blocks = block_weights.shape[0]
    total_weight = block_weights.sum()
    mean = block_values.sum(axis=0) / total_weight
    residual = block_values - mean * block_weights.reshape((n_blocks,) + (1,) * (block_values.ndim - 1))
    return np.sqrt(n_blocks / (n_blocks - 1) * np.sum(residual ** 2, axis=0)) / total_weight


def blocking_curve(values, weights=None, min_blocks=MIN_BLOCKS):
    """Block-averaging SE of <O>_w against the block length L = 1, 2, 4, ... (Flyvbjerg-Petersen).

    Args:
      values: (N, ...) per-state observable, states in trajectory order.
      weights: (N,) non-negative reweighting weights; None: uniform.
      min_blocks: the longest L used still leaves N // L >= min_blocks blocks.

    Returns:
      (block_lengths (K,) int, standard_errors (K, ...), uncertainties (K, ...)),
      the uncertainty of each SE being SE / sqrt(2 (B - 1)) for B = N // L blocks.
    """
    values, weights = _states_and_weights(values, weights)
    n = values.shape[0]
    if n // min_blocks < 1 or min_blocks < 2:
        raise ValueError(f"{n} states cannot form min_blocks={min_blocks} blocks (need 2 <= min_blocks <= {n})")
    lengths = 2 ** np.arange(int(np.log2(n // min_blocks)) + 1)
    counts = n // lengths
    errors = np.stack([_ratio_standard_error(*_block_sums(values, weights, b)) for b in counts])
    uncertainties = errors / np.sqrt(2.0 * (counts - 1)).reshape((-1,) + (1,) * (errors.ndim - 1))
    return lengths, errors, uncertainties


def optimal_block_count(values, weights=None, min_blocks=MIN_BLOCKS):
    """Number of blocks B = N // L at the plateau of the blocking curve.

    L is the smallest block length of ``blocking_curve`` with
    L^3 > 2 N (SE_L / SE_1)^4 (Lee et al. 2011; see the module docstring). For
    values with trailing dimensions (an RDF) the rule is applied per element and
    the longest L is used (elements with SE_1 = 0, e.g. a bin that is always
    empty, are skipped). If some element reaches no plateau before N // L drops
    below min_blocks, the longest L is used and a RuntimeWarning says the
    trajectory is too short for its correlation time (the SE is then likely an
    underestimate).

    Returns:
      int, the block count for ``block_standard_error`` / ``block_jackknife``.
    """
    values, weights = _states_and_weights(values, weights)
    n = values.shape[0]
    lengths, errors, _ = blocking_curve(values, weights, min_blocks)
    errors = errors.reshape(len(lengths), -1)
    varying = errors[0] > 0
    inefficiency_sq = (errors[:, varying] / errors[0, varying]) ** 4
    reached = lengths[:, None].astype(np.float64) ** 3 > 2.0 * n * inefficiency_sq
    if not reached.any(axis=0).all():
        warnings.warn(f"no blocking plateau within {n} states (min_blocks={min_blocks}): the trajectory is "
                      f"short for its correlation time; using {n // lengths[-1]} blocks, the SE is likely "
                      f"underestimated", RuntimeWarning, stacklevel=2)
    first_level = np.where(reached.any(axis=0), reached.argmax(axis=0), len(lengths) - 1)
    return int(n // lengths[first_level.max(initial=0)])


def block_standard_error(values, weights=None, n_blocks=None):
    """Standard error of the weighted average <O>_w = sum_i w_i O_i / sum_i w_i by block averaging.

    Ratio estimator with the delta method over B consecutive blocks (module
    docstring); uniform weights (or None) give the textbook blocking estimator.

    Args:
      values: (N, ...) per-state observable (any units), states in trajectory order;
        trailing dimensions (RDF bins, tensor components) are independent elements.
      weights: (N,) non-negative reweighting weights; None: uniform.
      n_blocks: B, 2 <= B <= N; None: ``optimal_block_count``.

    Returns:
      SE in the units of values, shape values.shape[1:] (a float64 scalar for a 1-D series).
    """
    values, weights = _states_and_weights(values, weights)
    if n_blocks is None:
        n_blocks = optimal_block_count(values, weights)
    return _ratio_standard_error(*_block_sums(values, weights, n_blocks))[()]


def block_jackknife(fn, per_state_arrays, weights=None, n_blocks=None):
    """Estimate and delete-one-block jackknife SE of fn(<X_1>_w, <X_2>_w, ...).

    For a nonlinear function of several reweighted averages, e.g. the
    fluctuation formula of the stiffness,
    C = <C_Born> - V/kT (<sigma sigma> - <sigma> <sigma>) + kinetic term, as
    ``fn = lambda born, ss, s: born - V / kT * (ss - np.einsum('i,j->ij', s, s))``
    with per_state_arrays (C_Born_i, sigma_i sigma_i, sigma_i). With block b
    left out, <X_k>_{-b} = (sum A_k - A_kb) / (sum W - W_b) and
    theta_{-b} = fn(<X_1>_{-b}, ...); SE^2 = (B - 1) / B sum_b (theta_{-b} - mean_b theta_{-b})^2.
    For a linear fn and uniform weights this equals ``block_standard_error``
    exactly.

    Args:
      fn: function of len(per_state_arrays) averages, returning an array (any shape).
      per_state_arrays: sequence of (N, ...) arrays, states in trajectory order.
      weights: (N,) non-negative reweighting weights; None: uniform.
      n_blocks: B; None: the smallest ``optimal_block_count`` over the arrays.

    Returns:
      (estimate, standard_error): fn of the full averages (not bias-corrected)
      and its SE, both float64 arrays of fn's output shape.
    """
    checked = [_states_and_weights(x, weights) for x in per_state_arrays]
    if not checked or len({x.shape[0] for x, _ in checked}) != 1:
        raise ValueError("per_state_arrays must be a non-empty sequence of arrays with the same number of states")
    weights = checked[0][1]
    arrays = [x for x, _ in checked]
    if n_blocks is None:
        n_blocks = min(optimal_block_count(x, weights) for x in arrays)
    sums = [_block_sums(x, weights, n_blocks) for x in arrays]
    block_weights = sums[0][1]
    total_weight = block_weights.sum()
    estimate = np.asarray(fn(*[a.sum(axis=0) / total_weight for a, _ in sums]), dtype=np.float64)
    left_out = np.stack([
        np.asarray(fn(*[(a.sum(axis=0) - a[b]) / (total_weight - block_weights[b]) for a, _ in sums]),
                   dtype=np.float64)
        for b in range(n_blocks)])
    spread = left_out - left_out.mean(axis=0)
    return estimate, np.sqrt((n_blocks - 1) / n_blocks * np.sum(spread ** 2, axis=0))
