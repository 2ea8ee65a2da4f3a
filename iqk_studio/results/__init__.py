"""The results store: every perplexity / KLD / imatrix / sensitivity run (built-in, external or
imported from a log) with what makes it comparable and its per-chunk values, in one SQLite file.

    store = open_store()                      # $IQK_STUDIO_DATA or the user data folder
    store.list_runs(kind="perplexity")        # [RunSummary], newest first
    store.get_run(run_id)                     # Run(info, chunks, groups)
    job = RecordedJob(job, evaluation_spec("perplexity", model, text, 512, 8))  # record a job
"""

from iqk_studio.results.recording import RecordedJob, evaluation_spec, file_id, model_id
from iqk_studio.results.records import (
    KINDS,
    SOURCES,
    STATUSES,
    ChunkRow,
    CostKey,
    CostRow,
    GroupRow,
    Run,
    RunSpec,
    RunSummary,
)
from iqk_studio.results.store import (
    ENV_DATA,
    ResultsStore,
    StoreError,
    data_dir,
    default_path,
    open_store,
)

__all__ = ["KINDS", "SOURCES", "STATUSES", "ChunkRow", "CostKey", "CostRow", "GroupRow", "Run", "RunSpec", "RunSummary",
           "RecordedJob", "evaluation_spec", "file_id", "model_id", "ENV_DATA", "ResultsStore",
           "StoreError", "data_dir", "default_path", "open_store"]
