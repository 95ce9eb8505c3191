"""What a model's probabilities carry, measured on the data: one temperature and a per-class offset.

Every verdict in ``core.scoring`` reads a probability as P(true class | image) under the label prior, the
quantity a model trained with plain cross-entropy on the given labels estimates. Models trained otherwise
do not: class-balanced sampling removes the prior, focal loss and label smoothing flatten the
probabilities, a long training run sharpens them. ``recalibrate`` maps any such probabilities back to
that reading by fitting, on the out-of-sample probabilities and the given labels themselves,

    q_j(x) = softmax_j(a * log p_j(x) + b_j)

by maximum likelihood of the given labels (``a`` > 0 one temperature, ``b`` (k,) a log-offset per class,
``b`` centred to sum 0). The negative log-likelihood is convex in (a, b), so the fit has one optimum.

Assumptions, and what follows from them:

* The model's probabilities are a monotone per-class rescaling and a power of calibrated ones
  (``p_j ∝ w_j q_j^(1/a)``); label noise is a minority of each class (most given labels are right),
  so the fitted q is calibrated to the given labels, as a model fit to them by cross-entropy is.
* Invariance: multiplying every row's probabilities by one per-class factor and renormalising, or
  raising them to one power and renormalising, changes ``log p`` only by a per-class constant and a
  common scale, which (a, b) absorb. The fitted q — and every verdict computed from it — is the same
  (to the optimiser's tolerance, for probabilities above ``FLOOR``).
* Not invariant: label smoothing (a mixture with the uniform distribution), or a miscalibration that
  differs from image to image. Those are met only as well as one temperature and offset fit them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize

FLOOR = 1e-12  # probabilities floored before logs (far below scoring.EPS: no verdict depends on it)


@dataclass(frozen=True)
class Calibration:
    scale: float  # a: the inverse temperature applied to log p
    bias: tuple[float, ...]  # b: per-class log-offsets, summing to 0

    def apply(self, pred_probs: np.ndarray) -> np.ndarray:
        """(n, k) recalibrated probabilities ``softmax(a log p + b)``; rows sum to 1."""
        logits = self.scale * np.log(np.clip(pred_probs, FLOOR, 1.0)) + np.asarray(self.bias)
        logits -= logits.max(axis=1, keepdims=True)
        out = np.exp(logits)
        return out / out.sum(axis=1, keepdims=True)


IDENTITY_SCALE = 1.0


def fit_calibration(labels: np.ndarray, pred_probs: np.ndarray) -> Calibration:
    """Maximum-likelihood (a, b) of the given ``labels`` (n,) int under ``softmax(a log p + b)``, ``pred_probs`` (n, k).

    Classes absent from ``labels`` keep the offset the others imply (their gradient pushes them down only
    as far as the add-one count below lets them: each class counts one pseudo-image spread over all
    images, so no class's probability is driven to zero). With fewer than two classes present the
    identity (a = 1, b = 0) is returned.
    """
    given = np.asarray(labels, dtype=np.int64)
    probs = np.asarray(pred_probs, dtype=np.float64)
    n, k = probs.shape
    logs = np.log(np.clip(probs, FLOOR, 1.0))
    logs -= logs.mean(axis=1, keepdims=True)  # centred: a per-row constant means nothing to a softmax
    if n == 0 or len(np.unique(given)) < 2:
        return Calibration(IDENTITY_SCALE, (0.0,) * k)
    target = np.zeros((n, k))
    target[np.arange(n), given] = 1.0
    target = (target + 1.0 / n) / (1.0 + k / n)  # add-one pseudo-count per class, spread over the images

    def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
        scale, bias = np.exp(theta[0]), theta[1:]
        logits = scale * logs + bias
        logits -= logits.max(axis=1, keepdims=True)
        log_q = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
        residual = np.exp(log_q) - target  # d loss / d logits, per row
        value = -(target * log_q).sum() / n
        grad_scale = (residual * logs).sum() * scale / n  # chain rule through scale = exp(theta[0])
        grad_bias = residual.sum(axis=0) / n
        return float(value), np.concatenate([[grad_scale], grad_bias])

    theta0 = np.zeros(k + 1)
    fitted = minimize(loss, theta0, jac=True, method="L-BFGS-B", options={"maxiter": 500, "gtol": 1e-10, "ftol": 1e-14})
    bias = fitted.x[1:] - fitted.x[1:].mean()
    return Calibration(float(np.exp(fitted.x[0])), tuple(float(b) for b in bias))


def recalibrate(labels: np.ndarray, pred_probs: np.ndarray) -> tuple[np.ndarray, Calibration]:
    """(``fit_calibration(labels, pred_probs).apply(pred_probs)``, the calibration): probabilities read as
    P(class | image) under the given labels' prior, whatever the model's own calibration."""
    calibration = fit_calibration(labels, pred_probs)
    return calibration.apply(np.asarray(pred_probs, dtype=np.float64)), calibration
