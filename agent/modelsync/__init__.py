"""Model sync: signed model versions from the cloud, verified, self-tested, shadow-run, activated."""
