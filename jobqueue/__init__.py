"""The job queue: RQ with Redis, or a thread pool without it (queueing.py); the worker that rides
out Redis outages (worker.py); abandoned-job detection; the staff pages over the queues. Imports
nothing of ours: the apps queue their jobs through it, by function or dotted name."""
