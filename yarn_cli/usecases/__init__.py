"""What each command does, without printing: the Python API (re-exported by ``yarn_cli.api``) and what the CLI calls."""
