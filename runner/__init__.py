"""runner: a workflow-file driven batch runner."""

__version__ = "0.1.0"
