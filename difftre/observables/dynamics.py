"""Dynamical post-processing of trajectories (NumPy; not differentiated).

Self-diffusion from the mean squared displacement (Einstein relation) and the
vibrational (phonon) density of states from the mass-weighted velocity
autocorrelation function, with its standard error from trajectory segments and its
peaks. Frames must be equally spaced in time; positions
must be unwrapped. Units: nm, ps, u; frequencies in THz (1/ps).
"""
import numpy as np
from scipy import signal


def _autocorrelation_sums(x):
    """sum_t x(t) x(t + m) over time origins t, for every lag m (FFT, zero-padded).

    x: (T, ...) with time on axis 0; returns (T, ...).
    """
    n = x.shape[0]
    f = np.fft.rfft(x, n=2 * n, axis=0)
    return np.fft.irfft(f * np.conj(f), n=2 * n, axis=0)[:n]


def mean_squared_displacement(positions):
    """MSD(m dt) averaged over particles and all time origins, (T,) nm^2.

    positions: (T, N, dim) unwrapped. Uses MSD(m) = S1(m) - 2 S2(m) with S2 the
    position autocorrelation (FFT) and S1 from cumulative sums, O(T log T).
    """
    x = np.asarray(positions, dtype=np.float64)
    n = x.shape[0]
    sq = np.sum(x**2, axis=-1)  # (T, N)
    cum = np.concatenate([np.zeros((1,) + sq.shape[1:]), np.cumsum(sq, axis=0)])
    lags = np.arange(n)
    s1 = cum[n - lags] + cum[n] - cum[lags]
    s2 = np.sum(_autocorrelation_sums(x), axis=-1)
    return np.mean((s1 - 2 * s2) / (n - lags)[:, None], axis=1)


def self_diffusion(positions, dt, fit_window):
    """Self-diffusion coefficient D (nm^2/ps) from a linear fit MSD(t) = 2 dim D t + b.

    Args:
      positions: (T, N, dim) unwrapped positions (nm), frames ``dt`` (ps) apart.
      dt: time between frames (ps).
      fit_window: (t_start, t_end) in ps, the diffusive regime to fit; keep
        t_end well below the trajectory length (few time origins at long lags).
    """
    msd = mean_squared_displacement(positions)
    t = dt * np.arange(msd.shape[0])
    sel = (t >= fit_window[0]) & (t <= fit_window[1])
    if sel.sum() < 2:
        raise ValueError(f"fit window {fit_window} ps holds fewer than 2 frames")
    slope = np.polyfit(t[sel], msd[sel], 1)[0]
    return slope / (2 * np.shape(positions)[-1])


def nm2_per_ps_to_cm2_per_s(value):
    """Convert a diffusion coefficient from nm^2/ps to cm^2/s (factor 1e-2)."""
    return 1e-2 * value


def velocity_autocorrelation(velocities, masses=None):
    """Mass-weighted VACF C(m dt) = sum_i m_i <v_i(0) . v_i(m dt)>, (T,) kJ/mol.

    velocities: (T, N, dim) nm/ps; masses: scalar or (N,) u (default 1).
    Averaged over all time origins.
    """
    v = np.asarray(velocities, dtype=np.float64)
    n = v.shape[0]
    masses = np.broadcast_to(1.0 if masses is None else masses, v.shape[1:2])
    sums = np.sum(_autocorrelation_sums(v), axis=-1) @ masses
    return sums / (n - np.arange(n))


def phonon_dos(velocities, dt, masses=None, max_lag=None):
    """Vibrational density of states from the Fourier transform of the mass-weighted VACF.

    The VACF up to ``max_lag`` frames (default: half the trajectory, where it
    is still well averaged) goes through ``dos_of_vacf``.

    Args:
      velocities: (T, N, dim) nm/ps, frames ``dt`` ps apart.
      dt: time between frames (ps).
      masses: scalar or (N,) u (default 1).
      max_lag: number of VACF lags used.

    Returns:
      frequency: (F,) THz, from 0 to the Nyquist frequency 1/(2 dt).
      dos: (F,) 1/THz, normalised to unit area (sum(dos) * dnu = 1).
    """
    vacf = velocity_autocorrelation(velocities, masses)
    return dos_of_vacf(vacf, dt, max_lag or len(vacf) // 2)


def dos_of_vacf(vacf, dt, max_lag):
    """(frequency (F,) THz, dos (F,) 1/THz) of a VACF (lags 0, dt, 2 dt, ...; dt in ps).

    The first ``max_lag`` lags are tapered with a half Hann window (it gives a line a full width at
    half maximum of about 0.72 / (max_lag dt) THz), mirrored to an even function and Fourier
    transformed; the DOS is normalised to unit area (sum(dos) * dnu = 1; times 3N - 3 it counts the
    modes of a crystal).
    """
    if not 2 <= max_lag <= len(vacf):
        raise ValueError(f"max_lag must be in [2, {len(vacf)}] lags, got {max_lag}")
    tapered = vacf[:max_lag] * np.hanning(2 * max_lag + 1)[max_lag:2 * max_lag]
    even = np.concatenate([tapered, tapered[:0:-1]])
    dos = np.fft.rfft(even).real
    frequency = np.fft.rfftfreq(len(even), dt)
    return frequency, dos / (np.sum(dos) * frequency[1])


def phonon_dos_with_error(velocities, dt, masses=None, n_segments=8):
    """Phonon DOS with its standard error: the mean of ``phonon_dos`` over n_segments consecutive
    segments of the trajectory (each with half a segment of VACF lags) and std / sqrt(n_segments).

    Args: velocities (T, N, dim) nm/ps, frames dt ps apart; masses scalar or (N,) u; n_segments >= 2.

    Returns:
      frequency (F,) THz, dos (F,) 1/THz (unit area) and its standard error (F,) 1/THz. The window
      widens every line by about 1.44 / segment length (THz, segment in ps) on top of its own width.
    """
    velocities = np.asarray(velocities)
    length = velocities.shape[0] // n_segments if n_segments >= 2 else 0
    if length < 4:
        raise ValueError(f"n_segments must be at least 2 with 4 frames each; got n_segments = {n_segments} for "
                         f"{velocities.shape[0]} frames")
    segments = [phonon_dos(velocities[k * length:(k + 1) * length], dt, masses) for k in range(n_segments)]
    dos = np.array([d for _, d in segments])
    return segments[0][0], dos.mean(axis=0), dos.std(axis=0, ddof=1) / np.sqrt(n_segments)


def dos_peaks(frequency, dos, min_prominence=0.1):
    """Frequencies (THz) of the DOS's peaks whose prominence exceeds min_prominence times its maximum,
    ascending (scipy.signal.find_peaks; a peak is located to within one frequency bin)."""
    indices, _ = signal.find_peaks(np.asarray(dos), prominence=min_prominence * float(np.max(dos)))
    return np.asarray(frequency)[indices]
