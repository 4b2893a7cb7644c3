"""The pipeline every channel shares: a turn, the inbox, the outbox, jobs, and the ports."""
