"""hf_prune's offline lm-eval tasks (YAML + JSON data); pass this folder as lm-eval's ``--include_path``.

A package only so that wheels ship ``paths.py`` (which the YAMLs read through ``!function``) with the
data; see :func:`hf_prune.evaluation.lm_eval.local_task_dir`.
"""
