"""The judge: checks, the engine that runs them, step scripts, hints. May import sessions_app and
below; registers itself with them in JudgeConfig.ready."""
