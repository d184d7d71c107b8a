"""What `kit up` needs to keep the playbook's CDC workers running (see docs/playbook.md).

`desired_workers(manifest)` lists the workers the playbook wants now, each with the argv of
`kit --manifest PATH worker run NAME`; `run_worker(manifest, name, stop)` is the same loop
in-process.
"""

from kit.playbook.pipelines import WorkerSpec, desired_workers, run_worker, worker_names

__all__ = ["WorkerSpec", "desired_workers", "run_worker", "worker_names"]
