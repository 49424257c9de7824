"""Data side of the pipeline: built-in data generation, dataset layouts, checking, transforms, loaders."""
