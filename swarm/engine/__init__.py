"""The engine: the eager DAG driver, one step's attempt, leases on running steps."""
