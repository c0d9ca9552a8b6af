"""The results store: an SQLite index of runs, exported weights and evaluations.

It never holds the only copy of anything: every evaluation row is first appended to the run folder's
`evaluations.jsonl` (or, for timm backbones without a run folder, to a log beside the database), and
`rebuild_store` recreates the database from those files.
"""

from pretrainlab.store.database import DEFAULT_STORE, ResultsStore
from pretrainlab.store.fingerprint import file_fingerprint
from pretrainlab.store.jsonlog import EVALUATIONS_LOG, append_evaluations, read_evaluations
from pretrainlab.store.rebuild import RebuildSummary, rebuild_store
from pretrainlab.store.recording import EvaluationRecorder
from pretrainlab.store.rows import CheckpointRow, EvaluationRow, RunRow

__all__ = ["DEFAULT_STORE", "EVALUATIONS_LOG", "CheckpointRow", "EvaluationRecorder", "EvaluationRow",
           "RebuildSummary", "ResultsStore", "RunRow", "append_evaluations", "file_fingerprint", "read_evaluations",
           "rebuild_store"]
