"""Job bodies, one module per task kind: ``run(ctx: TaskContext) -> dict`` (see ``worker.lifecycle``)."""
