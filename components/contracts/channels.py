"""The anomaly channel of the two-channel risk score: its thresholds, its 0-100 map and its
reason codes. Pure numpy, no I/O; part of ``blend.json`` (``BlendParams.anomaly``).

The score has two channels, each with its own thresholds (chosen on VALID by
``components.evaluate.thresholds``):

* supervised: the booster's margin, Platt-calibrated (``100 * sigmoid(a * margin + c)``);
* anomaly: the forest's standardized anomaly score ``z = (-score_samples - center) / scale``.

At each operating point ``k`` (Medium, the 1%-FPR point, High) the anomaly channel has a
threshold ``z_k`` and the supervised channel a 0-100 threshold ``s_k``. ``anomaly_score``
maps ``z`` onto the 0-100 scale so that ``anomaly_score(z) >= s_k`` exactly when
``z >= z_k`` (a monotone map through the knots ``(z_k, s_k)``), and the risk score is the
larger of the two channel scores. Hence the 0-100 score keeps its contract: monotone in both
channels, and ``score >= s_k`` (High, Medium, the 1%-FPR point) exactly when either channel
crosses its own threshold for that point.

Map between knots: linear; below the lowest knot ``s_0 * exp(z - z_0)`` (tends to 0); above
the highest ``s_top + (100 - s_top) * (1 - exp(-(z - z_top)))`` (tends to 100). The scalar
form (``anomaly_score_one``) does the same float64 operations in the same order, so single
and batch scores agree bit for bit.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from components.contracts.schemas import InputError

SUPERVISED, ANOMALY, BOTH = "supervised", "anomaly", "both"
"""Which channel(s) reached the risk level of a score (``fired``)."""


class ChannelError(InputError):
    """Channel parameters are invalid."""


@dataclass(frozen=True, kw_only=True)
class AnomalyChannel:
    """The anomaly channel's knots, budget share and per-feature norms."""

    knots_z: tuple[float, ...]
    """Anomaly-channel thresholds ``z_k`` (standardized forest score), non-decreasing."""
    knots_score: tuple[float, ...]
    """The 0-100 score each ``z_k`` maps to (the supervised threshold ``s_k``), increasing."""
    share: float
    """Share of each operating point's false-alarm budget (on valid) held by this channel."""
    norms: tuple[tuple[str, float, float], ...] = ()
    """(feature, center, scale) per anomaly feature: its median and robust spread on the
    train subset's honest rows; reason codes rank features by ``|x - center| / scale``."""

    def __post_init__(self) -> None:
        z, s = np.asarray(self.knots_z, float), np.asarray(self.knots_score, float)
        if z.size == 0 or z.shape != s.shape:
            raise ChannelError("anomaly channel needs as many knots_z as knots_score (>= 1)")
        if not (np.all(np.isfinite(z)) and np.all(np.isfinite(s))):
            raise ChannelError("anomaly channel knots are not finite")
        if np.any(np.diff(z) < 0) or np.any(np.diff(s) <= 0):
            raise ChannelError("knots_z must be non-decreasing and knots_score increasing")
        if s[0] < 0 or s[-1] > 100:
            raise ChannelError("knots_score must lie in [0, 100]")
        if not 0.0 <= self.share <= 1.0:
            raise ChannelError(f"share must be in [0, 1], got {self.share}")
        if any(not (math.isfinite(c) and scale > 0) for _, c, scale in self.norms):
            raise ChannelError("anomaly norms need finite centers and positive scales")

    def to_dict(self) -> dict[str, Any]:
        return {
            "knots_z": [float(v) for v in self.knots_z],
            "knots_score": [float(v) for v in self.knots_score],
            "share": float(self.share),
            "norms": [
                {"feature": n, "center": float(c), "scale": float(s)} for n, c, s in self.norms
            ],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AnomalyChannel:
        try:
            return cls(
                knots_z=tuple(float(v) for v in data["knots_z"]),
                knots_score=tuple(float(v) for v in data["knots_score"]),
                share=float(data["share"]),
                norms=tuple(
                    (str(n["feature"]), float(n["center"]), float(n["scale"]))
                    for n in data.get("norms") or ()
                ),
            )
        except KeyError as exc:
            raise ChannelError(f"anomaly channel misses field {exc}") from exc
        except (TypeError, ValueError) as exc:
            raise ChannelError(f"anomaly channel malformed: {exc}") from exc


def anomaly_score(z: np.ndarray, channel: AnomalyChannel) -> np.ndarray:
    """The anomaly channel's 0-100 score of standardized anomaly scores ``z`` (elementwise)."""
    z = np.asarray(z, dtype=np.float64)
    xs, ys = np.asarray(channel.knots_z), np.asarray(channel.knots_score)
    i = np.searchsorted(xs, z, side="right") - 1  # largest knot with z_k <= z
    out = np.empty_like(z)
    below, top = i < 0, i >= xs.size - 1
    out[below] = ys[0] * np.exp(z[below] - xs[0])
    out[top] = ys[-1] + (100.0 - ys[-1]) * (1.0 - np.exp(-(z[top] - xs[-1])))
    mid = ~(below | top)
    j = i[mid]
    out[mid] = ys[j] + (ys[j + 1] - ys[j]) * (z[mid] - xs[j]) / (xs[j + 1] - xs[j])
    return out


def anomaly_score_one(z: float, channel: AnomalyChannel, buf: np.ndarray) -> float:
    """``anomaly_score`` of one value, bit-identical to the batch result (``buf``: a (1,)
    float64 scratch array for numpy's ``exp``, the one the batch path uses)."""
    xs, ys = channel.knots_z, channel.knots_score
    i = -1
    for k, x in enumerate(xs):  # a handful of knots: a scan beats a bisect call
        if z >= x:
            i = k
    if i < 0:
        buf[0] = z - xs[0]
        np.exp(buf, out=buf)
        return ys[0] * float(buf[0])
    if i >= len(xs) - 1:
        buf[0] = -(z - xs[-1])
        np.exp(buf, out=buf)
        return ys[-1] + (100.0 - ys[-1]) * (1.0 - float(buf[0]))
    return ys[i] + (ys[i + 1] - ys[i]) * (z - xs[i]) / (xs[i + 1] - xs[i])


def fired(supervised: float, anomaly: float | None, threshold: float) -> str | None:
    """Which channel(s) have a channel score at or above ``threshold`` (the cut-off of the
    risk level the score reached): "supervised", "anomaly", "both" or None."""
    s = supervised >= threshold
    a = anomaly is not None and anomaly >= threshold
    if s and a:
        return BOTH
    return SUPERVISED if s else ANOMALY if a else None


def norm_index(
    channel: AnomalyChannel, feature_names: Sequence[str]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[str, ...]]:
    """Positions in ``feature_names``, centers, scales and names of the channel's norms."""
    names = tuple(n for n, _, _ in channel.norms)
    missing = [n for n in names if n not in feature_names]
    if missing:
        raise ChannelError(f"anomaly norms name unknown feature(s): {', '.join(missing)}")
    return (
        np.asarray([list(feature_names).index(n) for n in names], dtype=np.int64),
        np.asarray([c for _, c, _ in channel.norms], dtype=np.float64),
        np.asarray([s for _, _, s in channel.norms], dtype=np.float64),
        names,
    )


def deviations(X: np.ndarray, index: np.ndarray, center: np.ndarray, scale: np.ndarray):
    """``|X[:, index] - center| / scale``: each anomaly feature's distance from its norm."""
    return np.abs(np.asarray(X, dtype=np.float64)[:, index] - center) / scale
