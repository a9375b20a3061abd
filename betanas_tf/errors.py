"""Errors that every program reports the same way (cli.reports_errors), defined where any
module can raise them without importing the programs' machinery."""


class InputError(RuntimeError):
  """Input a program cannot use that is not a bad value: a dataset not prepared
  (data.DatasetNotPreparedError), a checkpoint of another run (runner.CheckpointError).
  Every program reports it as one line with exit status 1, as it does a ValueError."""
