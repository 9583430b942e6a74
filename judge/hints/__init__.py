"""Hints: asked on the session page, answered by Gemini or the lab's own text (answers.py),
in an RQ job (jobs.py); the panel's views and URLs, and the staff admin."""
