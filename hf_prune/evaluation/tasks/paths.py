"""Absolute paths of the local tasks' data, for the task YAMLs next to this file.

lm-eval resolves ``!function paths.NAME`` in a task YAML by importing this file and reading ``NAME``;
a relative ``data_files`` entry would instead be resolved against the current working directory.
"""

from pathlib import Path

_HERE = Path(__file__).resolve().parent

#: Data of ``hfp_code_ppl`` (rows ``{"text"}``).
PPL_FILE = str(_HERE / "hfp_code_ppl.json")
#: Data of ``hfp_code_mc`` (rows ``{"context", "choices", "label"}``).
MC_FILE = str(_HERE / "hfp_code_mc.json")
