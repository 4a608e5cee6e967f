"""The contract between the service and the analysis library.

Torch-free and dependency-light (pydantic and the standard library): the analysis
config with its defaults, the metric families and their estimators, the result
schema, the dataset-spec grammar, file-format detection, architecture names and the
built-ins' config keys, task and queue names, and error codes. ``service`` and
``analysis`` both import it; it imports neither.
"""
