"""Flow model, subgraph selection, scheduler and executor. No HTTP, no SQL."""
