"""Task and queue names: the API enqueues by these names, the workers register them.

``run_analysis`` goes to ``GPU_QUEUE`` unless the config asks for ``device: "cpu"``;
uploads are validated on ``CPU_QUEUE``. The reconciler and the audit scheduler's tick
go to ``CONTROL_QUEUE``, a queue of their own, so that a backlog of analyses never
holds them up (a worker serving several queues takes from each in turn); every
worker serves it unless told otherwise.
"""

from __future__ import annotations

VALIDATE_UPLOAD = "bottlelens.validate_upload"
RUN_ANALYSIS = "bottlelens.run_analysis"
RECONCILE = "bottlelens.reconcile"
SCHEDULER_TICK = "bottlelens.scheduler_tick"

GPU_QUEUE = "gpu"
CPU_QUEUE = "cpu"
CONTROL_QUEUE = "control"
QUEUES = (GPU_QUEUE, CPU_QUEUE, CONTROL_QUEUE)

# Where each task goes unless the sender names a queue.
ROUTES: dict[str, str] = {
    VALIDATE_UPLOAD: CPU_QUEUE,
    RECONCILE: CONTROL_QUEUE,
    SCHEDULER_TICK: CONTROL_QUEUE,
    RUN_ANALYSIS: GPU_QUEUE,
}


def analysis_queue(device: str) -> str:
    """The queue of an analysis whose config asks for ``device``."""
    return CPU_QUEUE if device == "cpu" else GPU_QUEUE
