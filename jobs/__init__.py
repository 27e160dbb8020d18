"""Moving work: publishing to the broker, the sweeper, Optuna searches, and what event
streams read."""
