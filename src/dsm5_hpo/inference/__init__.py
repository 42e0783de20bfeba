"""Using an exported model on new posts."""
