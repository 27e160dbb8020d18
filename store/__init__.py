"""SQL: the engine and migrations, the tables, and the queries and state changes of
experiments, runs, studies and tokens."""
