"""The Celery task: an experiment id in, training done by ``worker.training``."""

from jobs.queueing import TRAIN_TASK
from worker.celery_app import app
from worker.stop import listen_for_stop


@app.task(name=TRAIN_TASK)
def train(experiment_id: str) -> None:
    """Train one experiment; its outcome is written to its row, never returned."""
    listen_for_stop()  # here, not at fork: billiard resets the pool process's handlers after
    from worker.training import run_experiment  # TensorFlow loads here, in the pool process

    run_experiment(experiment_id)
