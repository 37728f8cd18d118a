"""Drift: a model appearing or disappearing, or answering as a different model."""

from __future__ import annotations

import datetime as dt
from typing import ClassVar

import numpy as np

from genops.collectors.anomaly.baseline import trailing
from genops.collectors.anomaly.detectors.base import Detector, Hit, PassContext
from genops.collectors.anomaly.queries import from_unix


class ModelDrift(Detector):
    """Model drift per provider/model, three checks on the 15-minute windows of
    ``genops_rollup_model_1m``:

    - ``new_model``: a model whose first call in the last 7 days came within the last hour,
      with at least 5 calls in the window. Needs 12 hours of data in the store first, so a
      fresh install does not report every model as new.
    - ``model_gone``: no call for 30 minutes (two back-to-back windows) from a model that had calls in at least 90% of
      the windows of the previous 24 hours (or since its first call, from 6 hours on) and a trailing 2-hour median of at least 10
      calls per window.
    - ``response_model_mismatch``: at least half the calls (and at least 5) answered by a
      model other than the one requested (a dated snapshot of the requested model, such as
      gpt-4o -> gpt-4o-2024-08-06, is not a mismatch), where the trailing 24-hour median of
      that share is below 20% (a model that is always aliased is the norm, not drift).

    Observed/expected are calls (new, gone) or the mismatched share; score is the calls in
    the window (new), the expected calls (gone) or share / 0.5 (mismatch).
    """

    name: ClassVar[str] = "model_drift"
    window_minutes: ClassVar[int] = 15
    new_within_minutes: ClassVar[int] = 60
    min_new_calls: ClassVar[int] = 5
    gone_min_expected: ClassVar[float] = 10.0
    gone_min_presence: ClassVar[float] = 0.9
    silent_windows: ClassVar[int] = 3  # steps between two back-to-back 15-minute windows
    mismatch_share: ClassVar[float] = 0.5
    mismatch_normal_share: ClassVar[float] = 0.2
    min_store_history_s: ClassVar[int] = 12 * 3600

    def detect(self, ctx: PassContext, t_from: dt.datetime, t_to: dt.datetime) -> list[Hit]:
        grid = self.grid(ctx, t_from, t_to, 7 * 24 * 60 + 30)
        data = self.fetch(ctx, "model_windows", grid, {"calls": 0, "ok_calls": 0, "mismatches": 0},
                          text_columns=("mismatch_model",))
        at = grid.eval_indexes(t_from)
        if not len(at) or not data:
            return []
        first_rows = ctx.rows("data_start")
        data_start = int(first_rows[0]["first"]) if first_rows else 0
        step = ctx.step_minutes
        day = 24 * 60 // step
        times = grid.times
        hits: list[Hit] = []
        for entity, series in data.items():
            calls = series["calls"]
            seen = np.nonzero(calls > 0)[0]
            first = int(seen[0]) if len(seen) else len(calls)
            # new model
            for i in at:
                t = int(times[i])
                if (calls[i] >= self.min_new_calls and i - first <= self.new_within_minutes // step
                        and first > 0 and data_start and data_start <= t - self.min_store_history_s):
                    hits.append(Hit(self.name, entity, from_unix(t), float(calls[i]), 0.0, float(calls[i]),
                                    "warning", "new_model", "calls", {"first_seen": str(grid.time_at(first))}))
            # model gone
            present = (calls > 0).astype(float)
            # share of windows with calls over the last day (or since the model's first call,
            # if that is at least 6 hours ago)
            presence = np.array([present[max(first, i - day):i].mean() if i - first >= day // 4 else 0.0
                                 for i in at])
            med, _, _ = trailing(np.where(np.arange(len(calls)) >= first, calls, np.nan), at,
                                 lookback=120 // step, gap=self.window_minutes // step, min_points=6)
            # silent for two back-to-back windows (30 minutes): agent sessions come in clumps, so
            # one empty window of a model that sessions stick to is not yet "gone"
            before = np.where(at >= self.silent_windows, calls[np.maximum(at - self.silent_windows, 0)], np.nan)
            gone = ((calls[at] == 0) & (before == 0) & (presence >= self.gone_min_presence)
                    & (np.nan_to_num(med) >= self.gone_min_expected))
            for j in np.nonzero(gone)[0].tolist():
                hits.append(Hit(self.name, entity, grid.time_at(int(at[j])), 0.0, float(med[j]), float(med[j]),
                                "critical", "model_gone", "calls", {"presence_24h": round(float(presence[j]), 3)}))
            # response model differs from the requested one
            ok = series["ok_calls"]
            with np.errstate(invalid="ignore", divide="ignore"):
                share = np.where(ok >= 5, series["mismatches"] / ok, np.nan)
            normal, _, _ = trailing(share, at, lookback=day, gap=self.window_minutes // step, min_points=12)
            for j, i in enumerate(at):
                if (not np.isnan(share[i]) and share[i] >= self.mismatch_share and not np.isnan(normal[j])
                        and normal[j] < self.mismatch_normal_share and series["mismatches"][i] >= 5):
                    score = share[i] / self.mismatch_share
                    hits.append(Hit(self.name, entity, grid.time_at(int(i)), round(float(share[i]), 4),
                                    round(float(normal[j]), 4), round(float(score), 3),
                                    "critical" if score >= 1.8 else "warning", "response_model_mismatch", "ratio",
                                    {"response_model": series.extra["mismatch_model"][i], "calls": int(ok[i])}))
        return hits
