"""State stores: where runs are recorded. `base.StateStore` is the port; backends adapt it."""
