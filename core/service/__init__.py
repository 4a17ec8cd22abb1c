"""Job service persistence shared by the API and the worker: settings, models, storage, leases.

Nothing here imports FastAPI or Celery: `api/` and `worker/` both depend on this package and meet only
through the database, the queue (by task name) and the artifact store.
"""
