"""Steps of the ``fine_tuning`` job (:mod:`worker.jobs.fine_tuning_job`), one module per step.

- :mod:`.batch_reader`: the clickstream batch → session dicts (refusals for unusable batches);
- :mod:`.items`: the items those sessions showed, loaded through the task's loader; missing ones
  are removed from the sessions and counted;
- :mod:`.start_model`: the model a task starts from, and its model line;
- :mod:`.training`: fine-tuning settings from the task options and the per-trial ``train_fn``;
- :mod:`.quality_gate`: does the candidate beat the start model on held-out sessions, beyond their
  noise (paired per query)?
- :mod:`.report`: the PNG report logged to the best MLflow run.
"""
