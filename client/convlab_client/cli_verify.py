"""How ``convlab show`` and ``convlab verify`` put what a run ran with and how its verification
went: lines of text from the API's ``environment`` and ``verdict`` objects."""

from convlab_client.client import Json

LABELS = {
    "python": "Python",
    "tensorflow": "TensorFlow",
    "keras": "Keras",
    "cuda": "CUDA",
    "cudnn": "cuDNN",
    "convlab": "convlab",
}
"""The versions an environment line names, in its order."""


def environment_line(environment: Json) -> str:
    """``Python 3.11.7, TensorFlow 2.21.0, ..., cpu, convlab 0.1.0 (commit 1b90cd3a3ad9)``."""
    parts = [f"{label} {environment.get(key) or '?'}" for key, label in LABELS.items()]
    gpu, driver = environment.get("gpu") or "?", environment.get("driver")
    parts.insert(-1, f"{gpu} (driver {driver})" if driver else gpu)
    commit = environment.get("commit")
    return ", ".join(parts) + (f" (commit {commit[:12]})" if commit else "")


def verdict_facts(verdict: Json | None) -> list[tuple[str, str]]:
    """The verdict's sentence, the two runs, and each environment field that differed."""
    if verdict is None:
        return []
    return [
        ("verdict", verdict["summary"]),
        ("verification", f"{verdict['rerun_id']} reran {verdict['original_id']}"),
        *(
            (f"differs {key}", f"{change['original']} (original), {change['rerun']} (rerun)")
            for key, change in verdict["environment_differences"].items()
        ),
    ]
