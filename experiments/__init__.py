"""The paper's experiments with their default configurations."""
