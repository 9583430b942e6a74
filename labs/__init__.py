"""Labs: the catalog and its pages, labs as code (labformat, Killercoda import), lab assets and
the staff VM image registry. May import runners and accounts; never sessions or anything above."""
