"""The ``complexity-tracker`` command line."""
