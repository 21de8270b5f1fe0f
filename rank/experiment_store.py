"""Experiment definitions in ``<prefix>-experiments``: create, read, start, stop, delete."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from vecrank.ingest.indices import create_index_if_missing
from vecrank.rank.experiment_definition import Experiment, ExperimentError
from vecrank.rank.model import Registry

if TYPE_CHECKING:
    from elasticsearch import Elasticsearch

    from vecrank.settings import Settings

log = logging.getLogger(__name__)


def experiments_mapping() -> dict[str, Any]:
    date = {"type": "date", "format": "epoch_millis"}
    return {
        "dynamic": "strict",
        "properties": {
            "experiment_id": {"type": "keyword"},
            "type": {"type": "keyword"},
            "status": {"type": "keyword"},
            "salt": {"type": "keyword", "index": False},
            "holdout": {"type": "float"},
            "control": {"type": "keyword"},
            "description": {"type": "text", "index": False},
            "arms": {"type": "object", "enabled": False},
            "metrics": {"type": "object", "enabled": False},
            "created_at": date,
            "started_at": date,
            "stopped_at": date,
        },
    }


def resolve_model(client: Elasticsearch, settings: Settings, ref: str | None) -> str | None:
    """``none``/None → None; ``vecrank`` → the active version pinned (``vecrank@3``); ``vecrank@2`` →
    checked to exist. Raises :class:`VecrankError` naming the known versions otherwise."""
    if ref is None or ref.lower() == "none":
        return None

    model_id, _, version = ref.partition("@")
    if version and not version.isdigit():
        raise ExperimentError(f"model must be MODEL_ID@VERSION or none, not {ref!r}")
    found = Registry(client, settings).get(model_id, int(version) if version else None)
    return f"{found.model_id}@{found.version}"


class ExperimentStore:
    """Experiment definitions in ``<prefix>-experiments`` (document id = experiment id)."""

    def __init__(self, client: Elasticsearch, settings: Settings):
        self.client, self.settings = client, settings
        self.index = settings.index("experiments")

    def _ensure(self) -> None:
        create_index_if_missing(self.client, self.index, experiments_mapping())

    def create(self, experiment: Experiment) -> Experiment:
        """Store a new draft; refuses an id that exists."""
        # lazy: elasticsearch takes 0.7 s to import; only the calls to the cluster need it
        from elasticsearch import ConflictError

        self._ensure()
        experiment.status = "draft"
        try:
            self.client.create(
                index=self.index, id=experiment.experiment_id, document=experiment.to_doc(), refresh="wait_for"
            )
        except ConflictError:
            raise ExperimentError(f"experiment {experiment.experiment_id!r} already exists") from None
        log.info(
            "Created experiment %s (%s, arms %s)",
            experiment.experiment_id,
            experiment.type,
            ", ".join(a.name for a in experiment.arms),
        )
        return experiment

    def _get_raw(self, experiment_id: str) -> tuple[Experiment, int, int]:
        resp = self.client.options(ignore_status=404).get(index=self.index, id=experiment_id)
        if not resp.body.get("found"):
            known = ", ".join(e.experiment_id for e in self.list()) or "none"
            raise ExperimentError(f"no experiment {experiment_id!r}; known: {known}")
        return Experiment.from_doc(resp["_source"]), resp["_seq_no"], resp["_primary_term"]

    def get(self, experiment_id: str) -> Experiment:
        if not self.client.indices.exists(index=self.index):
            raise ExperimentError(f"no experiment {experiment_id!r}; none created yet")
        return self._get_raw(experiment_id)[0]

    def list(self, status: str | None = None) -> list[Experiment]:
        if not self.client.indices.exists(index=self.index):
            return []
        query = {"term": {"status": status}} if status else {"match_all": {}}
        hits = self.client.search(
            index=self.index, query=query, size=1000, sort=[{"created_at": "asc"}, {"experiment_id": "asc"}]
        )["hits"]["hits"]
        return [Experiment.from_doc(h["_source"]) for h in hits]

    def running(self) -> Experiment | None:
        """The running experiment, if any (at most one runs at a time)."""
        found = self.list("running")
        if len(found) > 1:
            log.warning(
                "%d experiments are running (%s); serving uses %s",
                len(found),
                ", ".join(e.experiment_id for e in found),
                found[0].experiment_id,
            )
        return found[0] if found else None

    def _write(self, experiment: Experiment, seq_no: int, primary_term: int) -> None:
        # lazy: elasticsearch takes 0.7 s to import; only the calls to the cluster need it
        from elasticsearch import ConflictError

        try:
            self.client.index(
                index=self.index,
                id=experiment.experiment_id,
                document=experiment.to_doc(),
                if_seq_no=seq_no,
                if_primary_term=primary_term,
                refresh="wait_for",
            )
        except ConflictError:
            raise ExperimentError(f"experiment {experiment.experiment_id!r} changed concurrently; try again") from None

    def start(self, experiment_id: str, *, now_ms: int | None = None) -> Experiment:
        """``draft`` → ``running``. Refuses while another experiment runs."""
        self._ensure()
        experiment, seq, term = self._get_raw(experiment_id)
        if experiment.status != "draft":
            raise ExperimentError(
                f"experiment {experiment_id!r} is {experiment.status}; only a draft can start "
                "(create a new experiment to run it again)"
            )
        other = self.running()
        if other is not None:
            raise ExperimentError(f"experiment {other.experiment_id!r} is running; stop it first")
        experiment.status, experiment.started_at = "running", now_ms or int(time.time() * 1000)
        self._write(experiment, seq, term)
        log.info("Started experiment %s", experiment_id)
        return experiment

    def stop(self, experiment_id: str, *, now_ms: int | None = None) -> Experiment:
        """``running`` → ``stopped``; serving goes back to the default ranker."""
        experiment, seq, term = self._get_raw(experiment_id)
        if experiment.status != "running":
            raise ExperimentError(f"experiment {experiment_id!r} is {experiment.status}, not running")
        experiment.status, experiment.stopped_at = "stopped", now_ms or int(time.time() * 1000)
        self._write(experiment, seq, term)
        log.info("Stopped experiment %s", experiment_id)
        return experiment

    def delete(self, experiment_id: str) -> None:
        """Remove a definition that is not running (its events stay in the events index)."""
        experiment, _, _ = self._get_raw(experiment_id)
        if experiment.status == "running":
            raise ExperimentError(f"experiment {experiment_id!r} is running; stop it first")
        self.client.delete(index=self.index, id=experiment_id, refresh="wait_for")
