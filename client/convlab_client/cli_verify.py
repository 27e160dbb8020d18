"""How ``convlab show`` and ``convlab verify`` put what a run ran with and how its verification
went: lines of text from the API's ``environment`` and ``verdict`` objects."""

from convlab_client.client import Json

LABELS = {
    "python": "Python",
    "backend": "",
    "keras": "Keras",
    "cuda": "CUDA",
    "cudnn": "cuDNN",
    "convlab": "convlab",
}
"""The versions an environment line names, in its order ("backend": the one that trained)."""

BACKENDS = {"tensorflow": "TensorFlow", "jax": "JAX", "torch": "PyTorch"}
"""The Keras backends as the line names them."""


def environment_line(environment: Json) -> str:
    """``Python 3.11.7, TensorFlow 2.21.0, ..., cpu, convlab 0.1.0 (commit 1b90cd3a3ad9)``
    (``JAX 0.10.2`` where JAX trained it; one recorded before the backend was: TensorFlow)."""
    backend = environment.get("backend") or "tensorflow"
    labels = {**LABELS, "backend": BACKENDS.get(backend, backend)}
    keys = {**{key: key for key in LABELS}, "backend": backend}
    parts = [f"{label} {environment.get(keys[key]) or '?'}" for key, label in labels.items()]
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
