"""Ready tasks. Importing this package registers each task with the training core."""
