"""Sessions: the Session model and state machine, access, verbs, provisioning, jobs, reaper,
reconciler, the session page and the editor's files. May import labs, runners, accounts, jobqueue and
webserver; hears from higher rooms only through signals and registries."""
