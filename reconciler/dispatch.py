"""Pure dispatch order: which pending runs may start now."""
