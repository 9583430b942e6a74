"""Virtual machines: snapshots, learner ISOs, starting a session from either, their jobs and
pages. May import sessions_app and below; registers its job recovery in VmsConfig.ready."""
