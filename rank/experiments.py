"""Online experiments: definitions in ``<prefix>-experiments``, user assignment, and reports.

An experiment has arms, each a ranker — a registered model version (``vecrank@3``) or ``none``
(retrieval order), plus retrieval settings (``pool``, ``num_candidates``, ``mmr_lambda``...) —
and a holdout share of users who keep the default ranker. Two types:

* ``ab``: each user is assigned to one arm for the whole experiment;
* ``interleaving``: exactly two arms; every user outside the holdout sees one list merged from
  both by team draft (:mod:`vecrank.rank.interleaving`), each item crediting its ranker.

**Assignment** is a pure function of the user id and the experiment's salt: the first 8 bytes of
``sha256(salt + ":" + user)`` read as a fraction ``u`` of ``[0, 1)``; ``u < holdout`` is the holdout,
the rest of the interval is cut in proportion to the arms' weights. So it is sticky (no state,
the same after a restart or on another worker), uniform, and independent between experiments
whose salts differ (every experiment gets a random salt unless one is given).

**Events.** The service stores each exposure (an ``impression`` carrying the request id, position,
model version and the arm label ``<experiment>/<arm>``; for interleaving the label names the
item's team) and stamps later events that cite a request id with that request's arm. The report
re-attributes by request id and user as well, so an event stored without its arm still counts,
and a click citing a request served to another user does not.

**Report** (per arm, over users exposed between start and stop): users, requests, exposures,
clicks, CTR (clicks / exposures), clicks per user, conversion (share of exposed users with a
conversion event after their first exposure; one citing a request id counts only if that request
is the experiment's), NDCG@k from click positions (per user, the mean over their requests); each
arm against the control with 95% intervals, relative lift, p-values and whether each is
significant (:mod:`vecrank.rank.experiment_report`: ``ctr`` is the CTR test with users as
clusters, the one to read; ``ctr_independent``, which assumes independent impressions, is there
for reference and never called; no test calls a result with fewer than
:data:`~vecrank.rank.stats.MIN_USERS` users per arm); the sample-ratio check of users per arm; for
interleaving the preference with its interval, p-value, exact sign test and winner; cumulative
series for the plots.

The code is split by concern, and every name is importable from here:
:mod:`~vecrank.rank.experiment_definition` (:class:`Experiment`, :class:`Arm`, the constants),
:mod:`~vecrank.rank.experiment_assignment` (:func:`bucket`, :func:`assign`),
:mod:`~vecrank.rank.experiment_store` (:class:`ExperimentStore`, :func:`resolve_model`),
:mod:`~vecrank.rank.experiment_analysis` (attribution and :func:`analyse`, :func:`report`),
:mod:`~vecrank.rank.experiment_report` (the statistics, :class:`ArmStats`,
:class:`ExperimentReport`) and :mod:`~vecrank.rank.experiment_plot` (the plots).

Example:
    >>> exp = Experiment("e1", arms=(Arm("a"), Arm("b", weight=3)), salt="s", holdout=0.1)
    >>> exp.assign("user-42"), exp.assign("user-42") == Experiment.from_doc(exp.to_doc()).assign("user-42")
    ('b', True)
"""

from __future__ import annotations

from vecrank.rank.experiment_analysis import (
    analyse,
    collect_events,
    events_query,
    interleaving_outcomes,
    report,
    user_outcomes,
)
from vecrank.rank.experiment_assignment import HOLDOUT, assign, bucket
from vecrank.rank.experiment_definition import (
    INTERLEAVED,
    METRICS,
    RETRIEVAL_KEYS,
    STATUSES,
    TYPES,
    Arm,
    Experiment,
    ExperimentError,
)
from vecrank.rank.experiment_report import ArmStats, ExperimentReport
from vecrank.rank.experiment_store import ExperimentStore, experiments_mapping, resolve_model

__all__ = [
    "HOLDOUT",
    "INTERLEAVED",
    "METRICS",
    "RETRIEVAL_KEYS",
    "STATUSES",
    "TYPES",
    "Arm",
    "ArmStats",
    "Experiment",
    "ExperimentError",
    "ExperimentReport",
    "ExperimentStore",
    "analyse",
    "assign",
    "bucket",
    "collect_events",
    "events_query",
    "experiments_mapping",
    "interleaving_outcomes",
    "report",
    "resolve_model",
    "user_outcomes",
]
