"""Built-in driver families. Each registers under the ``edge.drivers`` entry points."""
